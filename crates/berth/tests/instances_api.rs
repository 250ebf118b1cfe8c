//! Container instances, attributes, tasks and the agent protocol over the wire, without Docker:
//! a scripted agent speaks the protocol by hand, so every state change is deterministic.

#![allow(clippy::unwrap_used)]

mod common;

use berth_agent_proto as proto;
use common::{raw_request, Answer, TestServer};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// A scripted agent: joins with the token, then polls and reports on request.
struct FakeAgent {
    endpoint: String,
    arn: String,
    ak: String,
    sk: String,
}

async fn agent_post(endpoint: &str, path: &str, body: &Value, key: Option<(&str, &str)>) -> Answer {
    let body = body.to_string();
    let host = endpoint.trim_start_matches("http://");
    let mut headers = vec![
        ("host".to_string(), host.to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    if let Some((ak, sk)) = key {
        let signed = berth_api::sigv4::sign_request(
            &berth_api::sigv4::SigningKey {
                access_key: ak,
                secret: sk,
                region: "us-east-1",
                service: "ecs",
            },
            "POST",
            &format!("{endpoint}{path}"),
            &[("host", host), ("content-type", "application/json")],
            body.as_bytes(),
            SystemTime::now(),
        )
        .unwrap();
        headers.extend(signed);
    }
    raw_request(endpoint, "POST", path, &headers, body.into_bytes()).await
}

fn host(memory: i32, az: &str) -> Value {
    json!({
        "instance_id": format!("i-{:017x}", rand_id()),
        "cpu": 2048,
        "memory_mib": memory,
        "reserved_ports": [22, 2375, 2376, 51678, 51679],
        "attributes": {"ecs.os-type": "linux", "ecs.availability-zone": az,
                       "com.amazonaws.ecs.capability.docker-remote-api.1.17": null},
        "agent_version": "test",
        "docker_version": "test"
    })
}

fn rand_id() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        * 7919
}

impl FakeAgent {
    async fn join(s: &TestServer, memory: i32) -> FakeAgent {
        Self::join_in(s, memory, "zone-a").await
    }

    async fn join_in(s: &TestServer, memory: i32, zone: &str) -> FakeAgent {
        Self::join_host(s, host(memory, zone)).await
    }

    /// An agent of `default` on the host `h` describes.
    async fn join_host(s: &TestServer, h: Value) -> FakeAgent {
        Self::join_cluster(s, "default", h).await
    }

    /// An agent of `cluster` on the host `h` describes.
    async fn join_cluster(s: &TestServer, cluster: &str, h: Value) -> FakeAgent {
        let token = s.control.ensure_join_token(cluster).await.unwrap();
        let a = agent_post(
            &s.endpoint,
            proto::JOIN_PATH,
            &json!({"cluster": cluster, "token": token, "host": h}),
            None,
        )
        .await;
        assert_eq!(a.status, 200, "join failed: {}", a.body);
        FakeAgent {
            endpoint: s.endpoint.clone(),
            arn: a.body["container_instance_arn"].as_str().unwrap().into(),
            ak: a.body["access_key_id"].as_str().unwrap().into(),
            sk: a.body["secret_access_key"].as_str().unwrap().into(),
        }
    }

    async fn poll(&self, known: Option<&str>, wait_ms: u64) -> Answer {
        agent_post(
            &self.endpoint,
            proto::POLL_PATH,
            &json!({"known_version": known, "wait_ms": wait_ms}),
            Some((&self.ak, &self.sk)),
        )
        .await
    }

    async fn report(&self, task: &str, status: &str, exit: Option<i32>) -> Answer {
        let a = agent_post(
            &self.endpoint,
            proto::REPORT_PATH,
            &json!({"reports": [{
                "task_arn": task, "last_status": status, "started_at": 1.0,
                "containers": [{"name": "app", "last_status": status, "exit_code": exit,
                                "network_bindings": []}]
            }]}),
            Some((&self.ak, &self.sk)),
        )
        .await;
        assert_eq!(a.status, 200, "report failed: {}", a.body);
        a
    }
}

async fn setup() -> TestServer {
    let s = TestServer::start().await;
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    s
}

async fn register_td(s: &TestServer, family: &str, memory: i32) -> String {
    let v = s
        .ok(
            "RegisterTaskDefinition",
            json!({"family": family, "containerDefinitions": [
                {"name": "app", "image": "busybox", "memory": memory}]}),
        )
        .await;
    v["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .unwrap()
        .into()
}

fn resource(ci: &Value, list: &str, name: &str) -> Value {
    ci[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {list}: {ci:#}"))
}

async fn describe_instance(s: &TestServer, arn: &str) -> Value {
    s.ok(
        "DescribeContainerInstances",
        json!({"cluster": "default", "containerInstances": [arn], "include": ["TAGS"]}),
    )
    .await["containerInstances"][0]
        .clone()
}

#[tokio::test]
async fn register_container_instance_reads_the_identity_document() {
    let s = setup().await;
    let doc = json!({"instanceId": "i-0123456789abcdef0", "instanceType": "m5.large",
                     "availabilityZone": "us-east-1b", "region": "us-east-1"})
    .to_string();
    let v = s
        .ok(
            "RegisterContainerInstance",
            json!({
                "cluster": "default",
                "instanceIdentityDocument": doc,
                "totalResources": [
                    {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
                    {"name": "MEMORY", "type": "INTEGER", "integerValue": 7680},
                    {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22", "2375"]}
                ],
                "attributes": [{"name": "stack", "value": "prod"}],
                "versionInfo": {"agentVersion": "1.80.0", "dockerVersion": "DockerVersion: 20.10"},
                "tags": [{"key": "team", "value": "a"}]
            }),
        )
        .await;
    let ci = &v["containerInstance"];
    assert_eq!(ci["ec2InstanceId"], "i-0123456789abcdef0");
    assert_eq!(ci["status"], "ACTIVE");
    assert_eq!(ci["agentConnected"], false, "no agent speaks for it");
    assert_eq!(
        resource(ci, "registeredResources", "MEMORY")["integerValue"],
        7680
    );
    assert_eq!(
        resource(ci, "remainingResources", "CPU")["integerValue"],
        2048
    );
    let attrs = ci["attributes"].as_array().unwrap();
    let attr = |n: &str| {
        attrs
            .iter()
            .find(|a| a["name"] == n)
            .map(|a| a["value"].clone())
    };
    assert_eq!(attr("ecs.instance-type"), Some(json!("m5.large")));
    assert_eq!(attr("ecs.availability-zone"), Some(json!("us-east-1b")));
    assert_eq!(attr("stack"), Some(json!("prod")));
    let arn = ci["containerInstanceArn"].as_str().unwrap();
    assert!(arn.starts_with("arn:aws:ecs:us-east-1:000000000000:container-instance/default/"));
    let d = describe_instance(&s, arn).await;
    assert_eq!(d["tags"], json!([{"key": "team", "value": "a"}]));
    assert_eq!(d["runningTasksCount"], 0);

    // A second registration of the same EC2 instance is the same container instance.
    let again = s
        .ok(
            "RegisterContainerInstance",
            json!({"cluster": "default", "instanceIdentityDocument": doc,
                   "totalResources": [{"name": "CPU", "type": "INTEGER", "integerValue": 4096},
                                      {"name": "MEMORY", "type": "INTEGER", "integerValue": 7680}]}),
        )
        .await;
    assert_eq!(again["containerInstance"]["containerInstanceArn"], arn);

    let bad = s
        .err(
            "RegisterContainerInstance",
            json!({"cluster": "default", "instanceIdentityDocument": "not json"}),
            "InvalidParameterException",
        )
        .await;
    assert!(bad.contains("instanceIdentityDocument"), "{bad}");
    s.err(
        "RegisterContainerInstance",
        json!({"cluster": "nope", "totalResources": []}),
        "ClusterNotFoundException",
    )
    .await;
    // Deleting a cluster that has instances is refused.
    s.err(
        "DeleteCluster",
        json!({"cluster": "default"}),
        "ClusterContainsContainerInstancesException",
    )
    .await;
}

#[tokio::test]
async fn draining_listing_and_attributes() {
    let s = setup().await;
    let a = FakeAgent::join(&s, 1024).await;
    let b = FakeAgent::join(&s, 1024).await;
    let v = s
        .ok(
            "UpdateContainerInstancesState",
            json!({"cluster": "default", "containerInstances": [a.arn, "nope0000"], "status": "DRAINING"}),
        )
        .await;
    assert_eq!(v["containerInstances"][0]["status"], "DRAINING");
    assert_eq!(v["failures"][0]["reason"], "MISSING");
    let m = s
        .err(
            "UpdateContainerInstancesState",
            json!({"cluster": "default", "containerInstances": [a.arn], "status": "INACTIVE"}),
            "InvalidParameterException",
        )
        .await;
    assert!(m.contains("ACTIVE or DRAINING"), "{m}");
    let draining = s
        .ok(
            "ListContainerInstances",
            json!({"cluster": "default", "status": "DRAINING"}),
        )
        .await;
    assert_eq!(draining["containerInstanceArns"], json!([a.arn]));
    let all = s
        .ok(
            "ListContainerInstances",
            json!({"cluster": "default", "maxResults": 1}),
        )
        .await;
    assert_eq!(all["containerInstanceArns"].as_array().unwrap().len(), 1);
    let rest = s
        .ok(
            "ListContainerInstances",
            json!({"cluster": "default", "nextToken": all["nextToken"]}),
        )
        .await;
    assert_eq!(rest["containerInstanceArns"].as_array().unwrap().len(), 1);
    assert_eq!(rest.get("nextToken"), None);

    // Attributes.
    let put = s
        .ok(
            "PutAttributes",
            json!({"cluster": "default", "attributes": [
                {"name": "stack", "value": "prod", "targetId": b.arn, "targetType": "container-instance"}]}),
        )
        .await;
    assert_eq!(put["attributes"][0]["targetId"], b.arn.as_str());
    let listed = s
        .ok(
            "ListAttributes",
            json!({"cluster": "default", "targetType": "container-instance", "attributeName": "stack"}),
        )
        .await;
    assert_eq!(
        listed["attributes"],
        json!([{"name": "stack", "value": "prod", "targetId": b.arn, "targetType": "container-instance"}])
    );
    let too_many: Vec<Value> = (0..10)
        .map(|i| json!({"name": format!("custom{i}"), "value": "x", "targetId": b.arn}))
        .collect();
    s.err(
        "PutAttributes",
        json!({"cluster": "default", "attributes": too_many}),
        "AttributeLimitExceededException",
    )
    .await;
    s.err(
        "PutAttributes",
        json!({"cluster": "default", "attributes": [{"name": "x", "value": "y", "targetId": "0123abcd"}]}),
        "TargetNotFoundException",
    )
    .await;
    s.err(
        "PutAttributes",
        json!({"cluster": "default", "attributes": [{"name": "bad name", "value": "y", "targetId": b.arn}]}),
        "InvalidParameterException",
    )
    .await;
    s.ok(
        "DeleteAttributes",
        json!({"cluster": "default", "attributes": [{"name": "stack", "targetId": b.arn}]}),
    )
    .await;
    let listed = s
        .ok(
            "ListAttributes",
            json!({"cluster": "default", "targetType": "container-instance", "attributeName": "stack"}),
        )
        .await;
    assert_eq!(listed["attributes"], json!([]));
}

#[tokio::test]
async fn the_agent_protocol_needs_the_token_and_keeps_agent_keys_to_itself() {
    let s = setup().await;
    let bad = agent_post(
        &s.endpoint,
        proto::JOIN_PATH,
        &json!({"cluster": "default", "token": "bjt-wrong", "host": host(512, "z")}),
        None,
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error_type().as_deref(), Some("AccessDeniedException"));
    let listed = s
        .ok("ListContainerInstances", json!({"cluster": "default"}))
        .await;
    assert_eq!(
        listed["containerInstanceArns"],
        json!([]),
        "a refused join registers nothing"
    );

    // Each cluster has its own token: default's does not open another cluster.
    s.ok("CreateCluster", json!({"clusterName": "other"})).await;
    let token = s.control.ensure_join_token("default").await.unwrap();
    let wrong = agent_post(
        &s.endpoint,
        proto::JOIN_PATH,
        &json!({"cluster": "other", "token": token, "host": host(512, "z")}),
        None,
    )
    .await;
    assert_eq!(
        wrong.error_type().as_deref(),
        Some("AccessDeniedException"),
        "{}",
        wrong.body
    );
    // The admin reads a cluster's token with Berth's own signed call; unknown clusters have none.
    let got = agent_post(
        &s.endpoint,
        berth_control::http::JOIN_TOKEN_PATH,
        &json!({"cluster": "default"}),
        Some((&s.access_key, &s.secret_key)),
    )
    .await;
    assert_eq!(got.body["token"], token.as_str(), "{}", got.body);
    let none = agent_post(
        &s.endpoint,
        berth_control::http::JOIN_TOKEN_PATH,
        &json!({"cluster": "ghost"}),
        Some((&s.access_key, &s.secret_key)),
    )
    .await;
    assert_eq!(
        none.error_type().as_deref(),
        Some("ClusterNotFoundException")
    );

    let a = FakeAgent::join(&s, 512).await;
    let denied = agent_post(
        &s.endpoint,
        berth_control::http::JOIN_TOKEN_PATH,
        &json!({"cluster": "default"}),
        Some((&a.ak, &a.sk)),
    )
    .await;
    assert_eq!(
        denied.error_type().as_deref(),
        Some("AccessDeniedException")
    );
    // The agent's key cannot drive the ECS API ...
    let denied = s
        .call_as("ListClusters", "{}", &a.ak, &a.sk, SystemTime::now())
        .await;
    assert_eq!(
        denied.error_type().as_deref(),
        Some("AccessDeniedException")
    );
    // ... nor CloudWatch's (nor read another agent's figures) ...
    let body = b"{}".to_vec();
    let headers = berth_api::sigv4::cloudwatch_request_headers(
        &berth_api::sigv4::SigningKey {
            access_key: &a.ak,
            secret: &a.sk,
            region: "us-east-1",
            service: "monitoring",
        },
        &s.endpoint,
        "ListMetrics",
        &body,
        SystemTime::now(),
    )
    .unwrap();
    let denied = common::raw_request(&s.endpoint, "POST", "/", &headers, body).await;
    assert_eq!(
        denied.error_type().as_deref(),
        Some("AccessDeniedException"),
        "{:?}",
        denied.body
    );
    // ... and the admin's key cannot speak for an agent.
    let denied = agent_post(
        &s.endpoint,
        proto::POLL_PATH,
        &json!({"known_version": null, "wait_ms": 0}),
        Some((&s.access_key, &s.secret_key)),
    )
    .await;
    assert_eq!(
        denied.error_type().as_deref(),
        Some("AccessDeniedException")
    );
    // An unsigned poll is not authenticated.
    let unsigned = agent_post(&s.endpoint, proto::POLL_PATH, &json!({"wait_ms": 0}), None).await;
    assert_eq!(unsigned.status, 403);
    // Garbage is a SerializationException, not a crash.
    let garbage = agent_post(&s.endpoint, proto::JOIN_PATH, &json!({"cluster": 5}), None).await;
    assert_eq!(
        garbage.error_type().as_deref(),
        Some("SerializationException")
    );

    let ci = describe_instance(&s, &a.arn).await;
    assert_eq!(ci["agentConnected"], true);
    assert_eq!(ci["versionInfo"]["agentVersion"], "test");
}

#[tokio::test]
async fn a_task_goes_from_placement_through_the_agent_to_stopped() {
    let s = setup().await;
    let td = register_td(&s, "web", 256).await;
    let a = FakeAgent::join(&s, 1000).await;

    let first = a.poll(None, 0).await;
    assert_eq!(first.body["tasks"], json!([]));
    let version = first.body["version"].as_str().unwrap().to_string();

    // The poll is held until a task arrives.
    let waiting = {
        let ep = s.endpoint.clone();
        let (ak, sk) = (a.ak.clone(), a.sk.clone());
        let v = version.clone();
        tokio::spawn(async move {
            agent_post(
                &ep,
                proto::POLL_PATH,
                &json!({"known_version": v, "wait_ms": 10000}),
                Some((&ak, &sk)),
            )
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let run = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web", "count": 2, "group": "g1",
                   "tags": [{"key": "k", "value": "v"}]}),
        )
        .await;
    assert_eq!(run["failures"], json!([]));
    let tasks: Vec<String> = run["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(run["tasks"][0]["taskDefinitionArn"], td.as_str());
    assert_eq!(run["tasks"][0]["group"], "g1");
    let polled = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("the held poll answered when the task was placed")
        .unwrap();
    assert_eq!(polled.body["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(polled.body["tasks"][0]["containers"][0]["image"], "busybox");

    let ci = describe_instance(&s, &a.arn).await;
    assert_eq!(ci["pendingTasksCount"], 2);
    assert_eq!(
        resource(&ci, "remainingResources", "MEMORY")["integerValue"],
        1000 - 512
    );

    a.report(&tasks[0], "RUNNING", None).await;
    let again = a.report(&tasks[0], "RUNNING", None).await;
    assert_eq!(
        again.body["applied"], 0,
        "a duplicate report changes nothing"
    );
    let d = s
        .ok(
            "DescribeTasks",
            json!({"cluster": "default", "tasks": [tasks[0], "ffff"], "include": ["TAGS"]}),
        )
        .await;
    assert_eq!(d["tasks"][0]["lastStatus"], "RUNNING");
    assert_eq!(d["tasks"][0]["tags"], json!([{"key": "k", "value": "v"}]));
    assert_eq!(
        d["failures"][0],
        json!({"arn": "ffff", "reason": "MISSING"})
    );

    // StopTask: desired STOPPED at once; STOPPED once the agent says so.
    let stopped = s
        .ok("StopTask", json!({"cluster": "default", "task": tasks[0]}))
        .await;
    assert_eq!(stopped["task"]["desiredStatus"], "STOPPED");
    assert_eq!(stopped["task"]["lastStatus"], "RUNNING");
    let p = a.poll(None, 0).await;
    let desired: Vec<&str> = p.body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["desired_status"].as_str().unwrap())
        .collect();
    assert!(desired.contains(&"STOPPED"));
    a.report(&tasks[0], "STOPPED", Some(143)).await;
    // A late RUNNING report cannot bring it back.
    a.report(&tasks[0], "RUNNING", None).await;
    let d = s
        .ok(
            "DescribeTasks",
            json!({"cluster": "default", "tasks": [tasks[0]]}),
        )
        .await;
    let t = &d["tasks"][0];
    assert_eq!(t["lastStatus"], "STOPPED");
    assert_eq!(t["stopCode"], "UserInitiated");
    assert_eq!(t["containers"][0]["exitCode"], 143);
    let ci = describe_instance(&s, &a.arn).await;
    assert_eq!(
        resource(&ci, "remainingResources", "MEMORY")["integerValue"],
        1000 - 256
    );
    assert_eq!(ci["pendingTasksCount"], 1);

    // Listing.
    let running = s.ok("ListTasks", json!({"cluster": "default"})).await;
    assert_eq!(running["taskArns"], json!([tasks[1]]));
    let stopped = s
        .ok(
            "ListTasks",
            json!({"cluster": "default", "desiredStatus": "STOPPED"}),
        )
        .await;
    assert_eq!(stopped["taskArns"], json!([tasks[0]]));
    let by_family = s
        .ok(
            "ListTasks",
            json!({"cluster": "default", "family": "other"}),
        )
        .await;
    assert_eq!(by_family["taskArns"], json!([]));
    let by_instance = s
        .ok(
            "ListTasks",
            json!({"cluster": "default", "containerInstance": a.arn}),
        )
        .await;
    assert_eq!(by_instance["taskArns"], json!([tasks[1]]));

    // A deregistration with a live task needs force; the agent's key dies with it.
    s.err(
        "DeregisterContainerInstance",
        json!({"cluster": "default", "containerInstance": a.arn}),
        "InvalidParameterException",
    )
    .await;
    let gone = s
        .ok(
            "DeregisterContainerInstance",
            json!({"cluster": "default", "containerInstance": a.arn, "force": true}),
        )
        .await;
    assert_eq!(gone["containerInstance"]["status"], "INACTIVE");
    let refused = a.poll(None, 0).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    // Its task can still be stopped: nobody is left to run it.
    let t = s
        .ok("StopTask", json!({"cluster": "default", "task": tasks[1]}))
        .await;
    assert_eq!(t["task"]["lastStatus"], "STOPPED");
}

#[tokio::test]
async fn run_task_refuses_what_it_cannot_do_and_reports_what_does_not_fit() {
    let s = setup().await;
    register_td(&s, "web", 256).await;
    let m = s
        .err(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web"}),
            "InvalidParameterException",
        )
        .await;
    assert_eq!(m, "No Container Instances were found in your cluster.");
    // An instance without an agent takes nothing.
    s.ok(
        "RegisterContainerInstance",
        json!({"cluster": "default", "totalResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": 1024},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": 1024}]}),
    )
    .await;
    let v = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web"}),
        )
        .await;
    assert_eq!(v["tasks"], json!([]));
    assert_eq!(v["failures"][0]["reason"], "AGENT");

    for (body, error, says) in [
        (
            json!({"taskDefinition": "web", "count": 11}),
            "InvalidParameterException",
            "count 11",
        ),
        (
            json!({"taskDefinition": "web", "launchType": "FARGATE"}),
            "InvalidParameterException",
            "FARGATE",
        ),
        (
            json!({"taskDefinition": "web", "launchType": "EC3"}),
            "InvalidParameterException",
            "EC3",
        ),
        (
            json!({"taskDefinition": "nope"}),
            "ClientException",
            "TaskDefinition not found.",
        ),
        (
            json!({"taskDefinition": "web", "overrides": {"containerOverrides": [{"name": "ghost"}]}}),
            "InvalidParameterException",
            "ghost",
        ),
        (
            json!({"taskDefinition": "web", "startedBy": "has space"}),
            "InvalidParameterException",
            "startedBy",
        ),
        (
            json!({"taskDefinition": "web", "cluster": "nope"}),
            "ClusterNotFoundException",
            "Cluster not found.",
        ),
    ] {
        let mut body = body;
        if body.get("cluster").is_none() {
            body["cluster"] = json!("default");
        }
        let m = s.err("RunTask", body.clone(), error).await;
        assert!(
            m.contains(says),
            "RunTask {body}: message '{m}' should mention '{says}'"
        );
    }
    s.err(
        "StopTask",
        json!({"cluster": "default", "task": "0123456789abcdef"}),
        "InvalidParameterException",
    )
    .await;
}

#[tokio::test]
async fn concurrent_run_tasks_never_over_commit_an_instance() {
    let s = setup().await;
    register_td(&s, "web", 100).await;
    let a = FakeAgent::join(&s, 1000).await;
    let mut calls = Vec::new();
    for i in 0..16 {
        let ep = s.endpoint.clone();
        let (ak, sk) = (s.access_key.clone(), s.secret_key.clone());
        calls.push(tokio::spawn(async move {
            let body = json!({"cluster": "default", "taskDefinition": "web",
                              "clientToken": format!("token-{i}")})
            .to_string();
            common::signed_call(&ep, "RunTask", &body, &ak, &sk, SystemTime::now()).await
        }));
    }
    let mut placed = 0;
    let mut refused = 0;
    for c in calls {
        let a = c.await.unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
        placed += a.body["tasks"].as_array().unwrap().len();
        refused += a.body["failures"].as_array().unwrap().len();
    }
    assert_eq!(
        (placed, refused),
        (10, 6),
        "1000 MiB holds exactly ten 100 MiB tasks"
    );
    let ci = describe_instance(&s, &a.arn).await;
    assert_eq!(
        resource(&ci, "remainingResources", "MEMORY")["integerValue"],
        0
    );

    // The same clientToken gives back the same tasks, not new ones.
    let again = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web", "clientToken": "token-0"}),
        )
        .await;
    let listed = s.ok("ListTasks", json!({"cluster": "default"})).await;
    assert_eq!(listed["taskArns"].as_array().unwrap().len(), 10);
    if let Some(t) = again["tasks"].as_array().unwrap().first() {
        assert!(listed["taskArns"]
            .as_array()
            .unwrap()
            .contains(&t["taskArn"]));
    }
}

#[tokio::test]
async fn clusters_count_tasks_and_refuse_deletion_while_they_live() {
    let s = setup().await;
    register_td(&s, "web", 100).await;
    let a = FakeAgent::join(&s, 1000).await;
    let run = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web", "count": 2}),
        )
        .await;
    let t0 = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    let t1 = run["tasks"][1]["taskArn"].as_str().unwrap().to_string();
    a.report(&t0, "RUNNING", None).await;
    let c = s
        .ok("DescribeClusters", json!({"clusters": ["default"]}))
        .await;
    assert_eq!(c["clusters"][0]["runningTasksCount"], 1);
    assert_eq!(c["clusters"][0]["pendingTasksCount"], 1);
    assert_eq!(c["clusters"][0]["registeredContainerInstancesCount"], 1);
    s.ok(
        "DeregisterContainerInstance",
        json!({"cluster": "default", "containerInstance": a.arn, "force": true}),
    )
    .await;
    s.err(
        "DeleteCluster",
        json!({"cluster": "default"}),
        "ClusterContainsTasksException",
    )
    .await;
    // The refused delete left the cluster ACTIVE and usable.
    let c = s
        .ok("DescribeClusters", json!({"clusters": ["default"]}))
        .await;
    assert_eq!(c["clusters"][0]["status"], "ACTIVE");
    for t in [&t0, &t1] {
        s.ok("StopTask", json!({"cluster": "default", "task": t}))
            .await;
    }
    let gone = s.ok("DeleteCluster", json!({"cluster": "default"})).await;
    assert_eq!(gone["cluster"]["status"], "INACTIVE");
}

#[tokio::test]
async fn placement_strategies_constraints_and_filters_over_the_wire() {
    let s = setup().await;
    register_td(&s, "web", 100).await;
    let a = FakeAgent::join_in(&s, 1000, "zone-a").await;
    let b = FakeAgent::join_in(&s, 2000, "zone-b").await;
    let c = FakeAgent::join_in(&s, 3000, "zone-c").await;
    let per_instance = |v: &Value| {
        let mut m = std::collections::BTreeMap::<String, usize>::new();
        for t in v["tasks"].as_array().unwrap() {
            *m.entry(t["containerInstanceArn"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        m
    };

    // Spread over zones: two per zone.
    let v = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web", "count": 6, "group": "spread",
                   "placementStrategy": [{"type": "spread", "field": "attribute:ecs.availability-zone"}]}),
        )
        .await;
    assert_eq!(
        per_instance(&v).values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{v:#}"
    );

    // Binpack on memory: everything on the instance with the least memory left.
    let v = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web", "count": 3, "group": "pack",
                   "placementStrategy": [{"type": "binpack", "field": "memory"}]}),
        )
        .await;
    assert_eq!(per_instance(&v), [(a.arn.clone(), 3)].into(), "{v:#}");

    // memberOf binds; distinctInstance allows one per instance.
    let v = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web", "count": 2, "group": "member",
                   "placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.availability-zone == zone-b"}]}),
        )
        .await;
    assert_eq!(per_instance(&v), [(b.arn.clone(), 2)].into(), "{v:#}");
    let v = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web", "count": 4, "group": "distinct",
                   "placementConstraints": [{"type": "distinctInstance"}]}),
        )
        .await;
    assert_eq!(v["tasks"].as_array().unwrap().len(), 3);
    assert!(v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["reason"] == "DistinctInstance placement constraint unsatisfied."));

    // task:group in a constraint sees what is already placed.
    let v = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web", "count": 1, "group": "beside",
                   "placementConstraints": [{"type": "memberOf", "expression": "task:group == member"}]}),
        )
        .await;
    assert_eq!(per_instance(&v), [(b.arn.clone(), 1)].into());

    // Errors say where.
    let m = s
        .err(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web",
                   "placementConstraints": [{"type": "memberOf", "expression": "attribute:stack =="}]}),
            "InvalidParameterException",
        )
        .await;
    assert!(m.contains("found the end at position 18"), "{m}");
    s.err(
        "RunTask",
        json!({"cluster": "default", "taskDefinition": "web",
               "placementStrategy": [{"type": "binpack", "field": "disk"}]}),
        "InvalidParameterException",
    )
    .await;

    // The same language filters ListContainerInstances.
    let listed = s
        .ok(
            "ListContainerInstances",
            json!({"cluster": "default", "filter": "attribute:ecs.availability-zone in [zone-a, zone-c]"}),
        )
        .await;
    let mut want = vec![a.arn.clone(), c.arn.clone()];
    want.sort();
    let mut got: Vec<String> = listed["containerInstanceArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, want);
    let busy = s
        .ok(
            "ListContainerInstances",
            json!({"cluster": "default", "filter": "runningTasksCount < 4"}),
        )
        .await;
    assert_eq!(
        busy["containerInstanceArns"],
        json!([c.arn]),
        "a and b hold six tasks each, c three"
    );
    let m = s
        .err(
            "ListContainerInstances",
            json!({"cluster": "default", "filter": "colour == red"}),
            "InvalidParameterException",
        )
        .await;
    assert!(m.contains("unknown subject 'colour'"), "{m}");
}

#[tokio::test]
async fn an_agent_that_stops_polling_is_disconnected_and_gets_no_tasks() {
    let s = TestServer::start_config(
        tempfile::tempdir().unwrap(),
        None,
        Default::default(),
        berth_control::Config {
            agent_timeout: std::time::Duration::from_millis(800),
            ..Default::default()
        },
    )
    .await;
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    register_td(&s, "web", 100).await;
    let a = FakeAgent::join(&s, 1000).await;
    assert_eq!(describe_instance(&s, &a.arn).await["agentConnected"], true);
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(
        describe_instance(&s, &a.arn).await["agentConnected"],
        false,
        "no poll for longer than the timeout"
    );
    let v = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web"}),
        )
        .await;
    assert_eq!(v["failures"][0]["reason"], "AGENT");
    // Polling again reconnects it.
    a.poll(None, 0).await;
    assert_eq!(describe_instance(&s, &a.arn).await["agentConnected"], true);
    let v = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web"}),
        )
        .await;
    assert_eq!(v["failures"], json!([]));
}

impl FakeAgent {
    /// Does what the server asks: every desired task RUNNING, every stopping one STOPPED.
    async fn settle(&self) {
        let p = self.poll(None, 0).await;
        for t in p.body["tasks"].as_array().unwrap() {
            let arn = t["task_arn"].as_str().unwrap();
            if t["desired_status"] == "STOPPED" {
                self.report(arn, "STOPPED", Some(0)).await;
            } else {
                self.report(arn, "RUNNING", None).await;
            }
        }
    }
}

async fn service(s: &TestServer, name: &str) -> Value {
    s.ok(
        "DescribeServices",
        json!({"cluster": "default", "services": [name]}),
    )
    .await["services"][0]
        .clone()
}

/// Live (not stopping) and running tasks of a service.
async fn live_tasks(s: &TestServer, name: &str) -> (usize, usize) {
    let tasks = common::service_tasks(s, name, None).await;
    let running = tasks
        .iter()
        .filter(|t| t["lastStatus"] == "RUNNING")
        .count();
    (tasks.len(), running)
}

#[tokio::test]
async fn a_service_keeps_its_tasks_running_scales_and_deletes() {
    let s = setup().await;
    register_td(&s, "web", 100).await;
    let a = FakeAgent::join_in(&s, 2000, "zone-a").await;
    let b = FakeAgent::join_in(&s, 2000, "zone-b").await;
    let created = s
        .ok(
            "CreateService",
            json!({"cluster": "default", "serviceName": "web", "taskDefinition": "web", "desiredCount": 3}),
        )
        .await;
    let svc = &created["service"];
    assert_eq!(svc["status"], "ACTIVE");
    assert_eq!(svc["deployments"][0]["status"], "PRIMARY");
    assert_eq!(svc["deployments"][0]["rolloutState"], "IN_PROGRESS");
    assert_eq!(svc["deploymentConfiguration"]["maximumPercent"], 200);

    s.control.reconcile_services().await.unwrap();
    let v = service(&s, "web").await;
    assert_eq!(v["pendingCount"], 3);
    assert!(
        v["events"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("(service web) has started 3 tasks: (task "),
        "{:#}",
        v["events"]
    );
    a.settle().await;
    b.settle().await;
    s.control.reconcile_services().await.unwrap();
    let v = service(&s, "web").await;
    assert_eq!(
        (v["runningCount"].clone(), v["pendingCount"].clone()),
        (json!(3), json!(0))
    );
    assert_eq!(
        v["events"][0]["message"],
        "(service web) has reached a steady state."
    );
    assert_eq!(v["deployments"][0]["rolloutState"], "COMPLETED");
    // Spread over the two zones by default.
    let ci = describe_instance(&s, &a.arn).await;
    let on_a = ci["runningTasksCount"].as_i64().unwrap();
    assert!(on_a == 1 || on_a == 2, "spread across zones, {on_a} on a");
    // A repeat of the steady state is not written again.
    s.control.reconcile_services().await.unwrap();
    let again = service(&s, "web").await;
    assert_eq!(
        again["events"].as_array().unwrap().len(),
        v["events"].as_array().unwrap().len()
    );

    // A task that stops is replaced.
    let arns = s
        .ok(
            "ListTasks",
            json!({"cluster": "default", "serviceName": "web"}),
        )
        .await["taskArns"]
        .clone();
    let victim = arns[0].as_str().unwrap().to_string();
    let owner = if s
        .ok(
            "DescribeTasks",
            json!({"cluster": "default", "tasks": [victim]}),
        )
        .await["tasks"][0]["containerInstanceArn"]
        == a.arn.as_str()
    {
        &a
    } else {
        &b
    };
    owner.report(&victim, "STOPPED", Some(137)).await;
    s.control.reconcile_services().await.unwrap();
    assert_eq!(
        live_tasks(&s, "web").await,
        (3, 2),
        "a replacement was placed"
    );
    a.settle().await;
    b.settle().await;

    // Scale 3 → 5 → 2.
    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "web", "desiredCount": 5}),
    )
    .await;
    s.control.reconcile_services().await.unwrap();
    a.settle().await;
    b.settle().await;
    s.control.reconcile_services().await.unwrap();
    assert_eq!(live_tasks(&s, "web").await, (5, 5));
    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "web", "desiredCount": 2}),
    )
    .await;
    s.control.reconcile_services().await.unwrap();
    a.settle().await;
    b.settle().await;
    s.control.reconcile_services().await.unwrap();
    assert_eq!(live_tasks(&s, "web").await, (2, 2));
    assert_eq!(service(&s, "web").await["runningCount"], 2);

    // Errors as ECS gives them.
    s.err(
        "CreateService",
        json!({"cluster": "default", "serviceName": "web", "taskDefinition": "web", "desiredCount": 1}),
        "InvalidParameterException",
    )
    .await;
    s.err(
        "UpdateService",
        json!({"cluster": "default", "service": "ghost", "desiredCount": 1}),
        "ServiceNotFoundException",
    )
    .await;
    let d = s
        .ok(
            "DescribeServices",
            json!({"cluster": "default", "services": ["web", "ghost"]}),
        )
        .await;
    assert_eq!(d["failures"][0]["reason"], "MISSING");
    s.err(
        "DeleteCluster",
        json!({"cluster": "default"}),
        "ClusterContainsServicesException",
    )
    .await;
    let m = s
        .err(
            "DeleteService",
            json!({"cluster": "default", "service": "web"}),
            "InvalidParameterException",
        )
        .await;
    assert!(m.contains("scaled above 0"), "{m}");
    let del = s
        .ok(
            "DeleteService",
            json!({"cluster": "default", "service": "web", "force": true}),
        )
        .await;
    assert_eq!(del["service"]["status"], "DRAINING");
    s.control.reconcile_services().await.unwrap();
    a.settle().await;
    b.settle().await;
    s.control.reconcile_services().await.unwrap();
    assert_eq!(service(&s, "web").await["status"], "INACTIVE");
    let listed = s.ok("ListServices", json!({"cluster": "default"})).await;
    assert_eq!(listed["serviceArns"], json!([]));
}

#[tokio::test]
async fn rolling_updates_stay_between_floor_and_ceiling() {
    for (min, max) in [(100, 200), (50, 100)] {
        let s = setup().await;
        register_td(&s, "web", 100).await;
        let a = FakeAgent::join_in(&s, 4000, "zone-a").await;
        s.ok(
            "CreateService",
            json!({"cluster": "default", "serviceName": "web", "taskDefinition": "web:1", "desiredCount": 4,
                   "deploymentConfiguration": {"minimumHealthyPercent": min, "maximumPercent": max}}),
        )
        .await;
        for _ in 0..3 {
            s.control.reconcile_services().await.unwrap();
            a.settle().await;
        }
        assert_eq!(live_tasks(&s, "web").await, (4, 4));
        register_td(&s, "web", 100).await;
        s.ok(
            "UpdateService",
            json!({"cluster": "default", "service": "web", "taskDefinition": "web:2"}),
        )
        .await;
        let v = service(&s, "web").await;
        assert_eq!(v["deployments"].as_array().unwrap().len(), 2);
        assert_eq!(v["deployments"][1]["status"], "ACTIVE");
        let floor = (4 * min as usize).div_ceil(100);
        let ceiling = 4 * max as usize / 100;
        let mut steady = false;
        for round in 0..12 {
            s.control.reconcile_services().await.unwrap();
            let (live, running) = live_tasks(&s, "web").await;
            assert!(
                live <= ceiling,
                "{min}/{max} round {round}: {live} live > ceiling {ceiling}"
            );
            a.settle().await;
            let (_, running_after) = live_tasks(&s, "web").await;
            assert!(
                running.min(running_after) >= floor,
                "{min}/{max} round {round}: {running} running < floor {floor}"
            );
            let v = service(&s, "web").await;
            if v["deployments"].as_array().unwrap().len() == 1
                && v["events"][0]["message"] == "(service web) has reached a steady state."
            {
                steady = true;
                break;
            }
        }
        assert!(steady, "{min}/{max}: the rollout finished");
        let v = service(&s, "web").await;
        assert!(v["deployments"][0]["taskDefinition"]
            .as_str()
            .unwrap()
            .ends_with("web:2"));
        assert_eq!(v["runningCount"], 4);
    }
}

#[tokio::test]
async fn service_tasks_move_off_draining_instances_and_lost_agents() {
    let s = TestServer::start_config(
        tempfile::tempdir().unwrap(),
        None,
        Default::default(),
        berth_control::Config {
            agent_timeout: std::time::Duration::from_millis(1500),
            ..Default::default()
        },
    )
    .await;
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    register_td(&s, "web", 100).await;
    let a = FakeAgent::join_in(&s, 2000, "zone-a").await;
    let b = FakeAgent::join_in(&s, 2000, "zone-b").await;
    let c = FakeAgent::join_in(&s, 2000, "zone-c").await;
    s.ok(
        "CreateService",
        json!({"cluster": "default", "serviceName": "web", "taskDefinition": "web", "desiredCount": 3}),
    )
    .await;
    let settle_all = || async {
        for agent in [&a, &b, &c] {
            agent.settle().await;
        }
    };
    for _ in 0..2 {
        s.control.reconcile_services().await.unwrap();
        settle_all().await;
    }
    let on = |ci: Value| ci["runningTasksCount"].as_i64().unwrap();
    assert_eq!(on(describe_instance(&s, &a.arn).await), 1, "one per zone");

    // Draining a: its task is replaced elsewhere first, then stopped.
    s.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "default", "containerInstances": [a.arn], "status": "DRAINING"}),
    )
    .await;
    s.control.reconcile_services().await.unwrap();
    assert_eq!(
        live_tasks(&s, "web").await.0,
        4,
        "replacement started, drained task kept"
    );
    settle_all().await;
    s.control.reconcile_services().await.unwrap();
    settle_all().await;
    s.control.reconcile_services().await.unwrap();
    assert_eq!(
        on(describe_instance(&s, &a.arn).await),
        0,
        "nothing left on the drained instance"
    );
    assert_eq!(live_tasks(&s, "web").await, (3, 3));

    // b's agent goes quiet: after the timeout its task is replaced on c.
    let b_tasks = on(describe_instance(&s, &b.arn).await);
    assert!(b_tasks >= 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        c.poll(None, 0).await; // c stays in touch
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    s.control.reconcile_services().await.unwrap();
    c.settle().await;
    s.control.reconcile_services().await.unwrap();
    let (live, running) = live_tasks(&s, "web").await;
    assert_eq!((live, running), (3, 3), "all three run on c now");
    assert_eq!(on(describe_instance(&s, &c.arn).await), 3);
    // When b comes back it is told to stop what it had.
    let p = b.poll(None, 0).await;
    assert!(p.body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["desired_status"] == "STOPPED"));
}

#[tokio::test]
async fn a_broken_deployment_trips_the_circuit_breaker_and_rolls_back() {
    let s = setup().await;
    register_td(&s, "web", 100).await; // web:1 works
    register_td(&s, "web", 100).await; // web:2 will fail
    let a = FakeAgent::join_in(&s, 4000, "zone-a").await;
    s.ok(
        "CreateService",
        json!({"cluster": "default", "serviceName": "web", "taskDefinition": "web:1", "desiredCount": 2,
               "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": true, "rollback": true}}}),
    )
    .await;
    for _ in 0..3 {
        s.control.reconcile_services().await.unwrap();
        a.settle().await;
    }
    assert_eq!(
        service(&s, "web").await["deployments"][0]["rolloutState"],
        "COMPLETED"
    );
    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "web", "taskDefinition": "web:2"}),
    )
    .await;
    // The agent: web:2 tasks die at once, everything else runs.
    let mut rolled_back = false;
    for _ in 0..20 {
        s.control.reconcile_services().await.unwrap();
        let p = a.poll(None, 0).await;
        for t in p.body["tasks"].as_array().unwrap() {
            let arn = t["task_arn"].as_str().unwrap();
            if t["desired_status"] == "STOPPED" || t["revision"] == 2 {
                a.report(arn, "STOPPED", Some(1)).await;
            } else {
                a.report(arn, "RUNNING", None).await;
            }
        }
        let v = service(&s, "web").await;
        let messages: Vec<String> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect();
        if messages
            .iter()
            .any(|m| m.contains("rolling back to deployment"))
        {
            assert!(
                messages
                    .iter()
                    .any(|m| m.ends_with("deployment failed: tasks failed to start.")),
                "{messages:#?}"
            );
            // The failed deployment has no task left, so it is already retired.
            assert!(v["deployments"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["rolloutState"] != "FAILED"));
            assert!(v["deployments"][0]["taskDefinition"]
                .as_str()
                .unwrap()
                .ends_with("web:1"));
            rolled_back = true;
            break;
        }
    }
    assert!(rolled_back, "the circuit breaker tripped and rolled back");
    // The rollback deployment settles on web:1 with two running tasks.
    for _ in 0..6 {
        s.control.reconcile_services().await.unwrap();
        a.settle().await;
    }
    let v = service(&s, "web").await;
    assert_eq!(v["runningCount"], 2);
    assert_eq!(
        v["deployments"].as_array().unwrap().len(),
        1,
        "{:#}",
        v["deployments"]
    );
    assert_eq!(v["deployments"][0]["rolloutState"], "COMPLETED");
    assert_eq!(
        v["events"][0]["message"],
        "(service web) has reached a steady state."
    );
}

#[tokio::test]
async fn a_daemon_service_runs_one_task_per_instance() {
    let s = setup().await;
    register_td(&s, "agentd", 50).await;
    let a = FakeAgent::join_in(&s, 1000, "zone-a").await;
    let b = FakeAgent::join_in(&s, 1000, "zone-b").await;
    s.err(
        "CreateService",
        json!({"cluster": "default", "serviceName": "d", "taskDefinition": "agentd",
               "schedulingStrategy": "DAEMON", "desiredCount": 2}),
        "InvalidParameterException",
    )
    .await;
    let v = s
        .ok(
            "CreateService",
            json!({"cluster": "default", "serviceName": "d", "taskDefinition": "agentd",
                   "schedulingStrategy": "DAEMON"}),
        )
        .await;
    assert_eq!(
        v["service"]["deploymentConfiguration"]["maximumPercent"],
        100
    );
    let on = |ci: Value| {
        ci["runningTasksCount"].as_i64().unwrap() + ci["pendingTasksCount"].as_i64().unwrap()
    };
    s.control.reconcile_services().await.unwrap();
    a.settle().await;
    b.settle().await;
    s.control.reconcile_services().await.unwrap();
    assert_eq!(on(describe_instance(&s, &a.arn).await), 1);
    assert_eq!(on(describe_instance(&s, &b.arn).await), 1);
    let v = service(&s, "d").await;
    assert_eq!(
        (v["desiredCount"].clone(), v["runningCount"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(
        v["events"][0]["message"],
        "(service d) has reached a steady state."
    );

    // A new instance gets one; a drained one loses its own.
    let c = FakeAgent::join_in(&s, 1000, "zone-c").await;
    s.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "default", "containerInstances": [a.arn], "status": "DRAINING"}),
    )
    .await;
    for _ in 0..2 {
        s.control.reconcile_services().await.unwrap();
        for agent in [&a, &b, &c] {
            agent.settle().await;
        }
    }
    s.control.reconcile_services().await.unwrap();
    assert_eq!(on(describe_instance(&s, &a.arn).await), 0);
    assert_eq!(on(describe_instance(&s, &b.arn).await), 1);
    assert_eq!(on(describe_instance(&s, &c.arn).await), 1);
    let v = service(&s, "d").await;
    assert_eq!(
        (v["desiredCount"].clone(), v["runningCount"].clone()),
        (json!(2), json!(2))
    );
    let listed = s
        .ok(
            "ListServices",
            json!({"cluster": "default", "schedulingStrategy": "DAEMON"}),
        )
        .await;
    assert_eq!(listed["serviceArns"].as_array().unwrap().len(), 1);
}

/// Every task a service ever started (running or stopped): its definition and last status.
async fn all_service_tasks(s: &TestServer, name: &str) -> Vec<(String, String)> {
    let mut tasks = common::service_tasks(s, name, Some("RUNNING")).await;
    tasks.extend(common::service_tasks(s, name, Some("STOPPED")).await);
    tasks
        .iter()
        .map(|t| {
            (
                t["taskDefinitionArn"].as_str().unwrap().to_string(),
                t["lastStatus"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_deployment_carries_on_after_a_server_restart_without_duplicating_or_losing_tasks() {
    let s = setup().await;
    register_td(&s, "web", 100).await;
    let a = FakeAgent::join_in(&s, 4000, "zone-a").await;
    s.ok(
        "CreateService",
        json!({"cluster": "default", "serviceName": "web", "taskDefinition": "web:1", "desiredCount": 4,
               "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 150}}),
    )
    .await;
    for _ in 0..3 {
        s.control.reconcile_services().await.unwrap();
        a.settle().await;
    }
    assert_eq!(live_tasks(&s, "web").await, (4, 4));
    register_td(&s, "web", 100).await;
    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "web", "taskDefinition": "web:2"}),
    )
    .await;
    // One pass of the rollout: new tasks placed, old ones told to stop; the agent has not
    // answered yet when the server goes down.
    s.control.reconcile_services().await.unwrap();
    let before = all_service_tasks(&s, "web").await;
    let started_new = before
        .iter()
        .filter(|(td, _)| td.ends_with("web:2"))
        .count();
    assert!(started_new > 0, "the rollout began: {before:?}");

    let s = s.restart().await;
    // The restarted server counts what the store holds: the first pass's tasks are there, and
    // the next pass only adds what the rollout still needs.
    s.control.reconcile_services().await.unwrap();
    let after = all_service_tasks(&s, "web").await;
    let new_after = after.iter().filter(|(td, _)| td.ends_with("web:2")).count();
    assert!(
        (started_new..=4).contains(&new_after),
        "{started_new} web:2 tasks before the restart, {new_after} after: {after:?}"
    );
    let mut steady = false;
    for round in 0..12 {
        a.settle().await;
        s.control.reconcile_services().await.unwrap();
        let (live, _) = live_tasks(&s, "web").await;
        assert!(live <= 6, "round {round}: {live} live > ceiling 6");
        let v = service(&s, "web").await;
        if v["deployments"].as_array().unwrap().len() == 1 && v["runningCount"] == 4 {
            steady = true;
            break;
        }
    }
    assert!(steady, "the rollout finished after the restart");
    let all = all_service_tasks(&s, "web").await;
    let new: Vec<_> = all.iter().filter(|(td, _)| td.ends_with("web:2")).collect();
    let old: Vec<_> = all.iter().filter(|(td, _)| td.ends_with("web:1")).collect();
    assert_eq!(
        new.len(),
        4,
        "exactly four web:2 tasks were ever started: {all:?}"
    );
    assert!(new.iter().all(|(_, st)| st == "RUNNING"), "{all:?}");
    assert_eq!(
        old.len(),
        4,
        "no web:1 task was lost or duplicated: {all:?}"
    );
    assert!(old.iter().all(|(_, st)| st == "STOPPED"), "{all:?}");
}

#[tokio::test]
async fn a_task_write_wakes_only_its_own_agents_poll() {
    let s = setup().await;
    register_td(&s, "web", 100).await;
    let a = std::sync::Arc::new(FakeAgent::join(&s, 1000).await);
    let b = std::sync::Arc::new(FakeAgent::join(&s, 1000).await);
    let va = a.poll(None, 0).await.body["version"]
        .as_str()
        .unwrap()
        .to_string();
    let vb = b.poll(None, 0).await.body["version"]
        .as_str()
        .unwrap()
        .to_string();
    let held = |agent: std::sync::Arc<FakeAgent>, known: String| {
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let answer = agent.poll(Some(&known), 4000).await;
            (answer, started.elapsed())
        })
    };
    let (pa, pb) = (held(a.clone(), va.clone()), held(b.clone(), vb.clone()));
    // Both polls are held before the write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let generation = |arn: &str| s.control.state.generation(arn);
    let (ga, gb) = (generation(&a.arn), generation(&b.arn));
    s.ok(
        "StartTask",
        json!({"cluster": "default", "taskDefinition": "web", "containerInstances": [a.arn]}),
    )
    .await;
    let (answer, took) = tokio::time::timeout(Duration::from_secs(3), pa)
        .await
        .expect("A's poll answers when its task is written")
        .unwrap();
    assert!(took < Duration::from_secs(3), "A waited {took:?}");
    assert_ne!(answer.body["version"], va.as_str());
    assert_eq!(answer.body["tasks"].as_array().unwrap().len(), 1);
    assert!(generation(&a.arn) > ga, "A's poll was not woken");
    assert_eq!(
        generation(&b.arn),
        gb,
        "B's poll was woken by a task on another instance"
    );
    assert!(!pb.is_finished(), "B's poll answered early");
    let (answer, took) = pb.await.unwrap();
    assert_eq!(
        answer.body["version"],
        vb.as_str(),
        "B's desired set did not change"
    );
    assert!(
        took >= Duration::from_millis(3500),
        "B's poll answered after {took:?}, before its wait was up"
    );
}

#[tokio::test]
async fn start_task_naming_an_instance_twice_places_one_copy_and_reserves_once() {
    let s = setup().await;
    register_td(&s, "web", 100).await;
    let a = FakeAgent::join(&s, 1000).await;
    a.poll(None, 0).await;
    let v = s
        .ok(
            "StartTask",
            json!({"cluster": "default", "taskDefinition": "web",
                   "containerInstances": [a.arn, a.arn]}),
        )
        .await;
    assert_eq!(v["tasks"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["failures"][0]["reason"], "MISSING", "{v}");
    let ci = describe_instance(&s, &a.arn).await;
    assert_eq!(
        resource(&ci, "remainingResources", "MEMORY")["integerValue"],
        900,
        "one copy's memory reserved, once"
    );
}

/// Members an agent cannot honour require the ECS agent's capability for them, which Berth's
/// agents do not advertise: such a task is refused at placement, never run with the member
/// dropped. What they do implement is placed.
#[tokio::test]
async fn members_no_agent_implements_are_refused_at_placement_by_capability() {
    let s = TestServer::start().await;
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    // An agent advertising exactly what Berth's agent does.
    let mut attributes = serde_json::Map::new();
    attributes.insert("ecs.os-type".into(), json!("linux"));
    for c in berth_agent::CAPABILITIES {
        attributes.insert(c.to_string(), Value::Null);
    }
    let token = s.control.ensure_join_token("default").await.unwrap();
    let joined = agent_post(
        &s.endpoint,
        proto::JOIN_PATH,
        &json!({"cluster": "default", "token": token, "host": {
            "instance_id": format!("i-{:017x}", rand_id()), "cpu": 2048, "memory_mib": 2048,
            "reserved_ports": [], "attributes": attributes,
            "agent_version": "test", "docker_version": "test"}}),
        None,
    )
    .await;
    assert_eq!(joined.status, 200, "{}", joined.body);
    let app = |extra: Value| {
        let mut c = json!({"name": "app", "image": "busybox", "memory": 32});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let cases = [
        (
            json!({"family": "envfiles", "containerDefinitions": [app(json!({
                "environmentFiles": [{"value": "arn:aws:s3:::bucket/app.env", "type": "s3"}]}))]}),
            "ecs.capability.env-files.s3",
        ),
        (
            json!({"family": "efs", "containerDefinitions": [app(json!({
                "mountPoints": [{"sourceVolume": "shared", "containerPath": "/data"}]}))],
                   "volumes": [{"name": "shared", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}]}),
            "ecs.capability.efs",
        ),
        (
            json!({"family": "restart", "containerDefinitions": [app(json!({
                "restartPolicy": {"enabled": true}}))]}),
            "ecs.capability.container-restart-policy",
        ),
        (
            json!({"family": "pidtask", "pidMode": "task", "containerDefinitions": [app(json!({}))]}),
            "ecs.capability.pid-ipc-namespace-sharing",
        ),
    ];
    for (td, capability) in cases {
        let family = td["family"].as_str().unwrap().to_string();
        let r = s.ok("RegisterTaskDefinition", td).await;
        let needs: Vec<&str> = r["taskDefinition"]["requiresAttributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert!(
            needs.contains(&capability),
            "{family} needs {capability}: {needs:?}"
        );
        let v = s
            .ok(
                "RunTask",
                json!({"cluster": "default", "taskDefinition": family}),
            )
            .await;
        assert_eq!(
            v["tasks"],
            json!([]),
            "{family} must not run without {capability}"
        );
        assert_eq!(v["failures"][0]["reason"], "ATTRIBUTE", "{family}: {v}");
    }
    // What the agent implements runs.
    s.ok(
        "RegisterTaskDefinition",
        json!({"family": "hostopts", "pidMode": "host", "containerDefinitions": [app(json!({
            "linuxParameters": {"initProcessEnabled": true, "capabilities": {"add": ["NET_ADMIN"]}},
            "extraHosts": [{"hostname": "a", "ipAddress": "10.0.0.1"}],
            "restartPolicy": {"enabled": false}}))]}),
    )
    .await;
    let v = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "hostopts"}),
        )
        .await;
    assert_eq!(v["failures"], json!([]), "{v}");
    s.stop().await;
}

/// `propagateTags` and `enableECSManagedTags` give RunTask's and a service's tasks their tags;
/// UpdateService applies them to later tasks and refuses by name what it cannot apply.
#[tokio::test]
async fn tasks_get_propagated_and_managed_tags() {
    let s = TestServer::start().await;
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    let mut td = common::task_def("web");
    td["tags"] = json!([{"key": "team", "value": "a"}, {"key": "k", "value": "from-def"}]);
    s.ok("RegisterTaskDefinition", td).await;
    let _agent = FakeAgent::join(&s, 4000).await;
    let tags_of = |task: Value| {
        let mut t: Vec<(String, String)> = task["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["key"].as_str().unwrap().to_string(),
                    t["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        t.sort();
        t
    };
    let run = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web",
                   "tags": [{"key": "k", "value": "given"}],
                   "propagateTags": "TASK_DEFINITION", "enableECSManagedTags": true}),
        )
        .await;
    let arn = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    let d = s
        .ok(
            "DescribeTasks",
            json!({"cluster": "default", "tasks": [arn], "include": ["TAGS"]}),
        )
        .await;
    assert_eq!(
        tags_of(d["tasks"][0].clone()),
        vec![
            ("aws:ecs:clusterName".to_string(), "default".to_string()),
            ("k".into(), "given".into()),
            ("team".into(), "a".into()),
        ],
        "the request's tag wins over the definition's of the same key"
    );
    let e = s
        .err(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web", "propagateTags": "SERVICE"}),
            "InvalidParameterException",
        )
        .await;
    assert!(e.contains("SERVICE"), "{e}");

    s.ok(
        "CreateService",
        json!({"cluster": "default", "serviceName": "api", "taskDefinition": "web",
               "desiredCount": 1, "tags": [{"key": "svc", "value": "x"}],
               "propagateTags": "SERVICE", "enableECSManagedTags": true}),
    )
    .await;
    s.control.reconcile_services().await.unwrap();
    let listed = s
        .ok(
            "ListTasks",
            json!({"cluster": "default", "serviceName": "api"}),
        )
        .await;
    let d = s
        .ok(
            "DescribeTasks",
            json!({"cluster": "default", "tasks": listed["taskArns"], "include": ["TAGS"]}),
        )
        .await;
    assert_eq!(
        tags_of(d["tasks"][0].clone()),
        vec![
            ("aws:ecs:clusterName".to_string(), "default".to_string()),
            ("aws:ecs:serviceName".into(), "api".into()),
            ("svc".into(), "x".into()),
        ]
    );
    let e = s
        .err(
            "UpdateService",
            json!({"cluster": "default", "service": "api",
                   "capacityProviderStrategy": [{"capacityProvider": "FARGATE"}]}),
            "InvalidParameterException",
        )
        .await;
    assert!(e.contains("not associated with the cluster"), "{e}");
    // A target group that does not exist is refused with ECS's words, and nothing changes.
    let e = s
        .err(
            "UpdateService",
            json!({"cluster": "default", "service": "api", "propagateTags": "NONE",
                   "loadBalancers": [{"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/t/1", "containerName": "app", "containerPort": 80}]}),
            "InvalidParameterException",
        )
        .await;
    assert_eq!(
        e,
        "The target group arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/t/1 does not exist."
    );
    let u = s
        .ok(
            "UpdateService",
            json!({"cluster": "default", "service": "api", "propagateTags": "NONE"}),
        )
        .await;
    assert_eq!(u["service"]["propagateTags"], "NONE");
    // What a tool resends unchanged is accepted.
    s.ok(
        "UpdateService",
        json!({"cluster": "default", "service": "api", "enableExecuteCommand": false,
               "serviceConnectConfiguration": {"enabled": false}}),
    )
    .await;
    // A task with ECS's own tags can still be tagged and untagged by its user.
    let task = listed["taskArns"][0].as_str().unwrap().to_string();
    s.ok(
        "TagResource",
        json!({"resourceArn": task, "tags": [{"key": "more", "value": "1"}]}),
    )
    .await;
    s.ok(
        "UntagResource",
        json!({"resourceArn": task, "tagKeys": ["svc"]}),
    )
    .await;
    assert_eq!(
        u["service"]["loadBalancers"],
        json!([]),
        "the refused load balancers were not stored"
    );
    s.stop().await;
}

/// An EC2 call straight to the handler, as the admin.
async fn ec2_call(s: &TestServer, form: &str) -> Value {
    let (key, _) = s.control.ensure_admin_key().await.unwrap();
    let req = berth_api::parse_ec2_request(form.as_bytes()).unwrap();
    s.control
        .handle_ec2(&berth_control::Caller::from(&key), req)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_24_gives_out_251_addresses_at_once_and_takes_them_back_so_300_tasks_run_in_turn() {
    let s = setup().await;
    // An agent that sets up task interfaces.
    let mut h = host(8192, "zone-a");
    h["attributes"]["ecs.capability.task-eni"] = Value::Null;
    h["attributes"]["com.amazonaws.ecs.capability.docker-remote-api.1.18"] = Value::Null;
    let agent = FakeAgent::join_host(&s, h).await;
    let vpc = ec2_call(
        &s,
        "Action=CreateVpc&Version=2016-11-15&CidrBlock=10.9.0.0%2F16",
    )
    .await;
    let vpc = vpc["Vpc"]["VpcId"].as_str().unwrap().to_string();
    let subnet = ec2_call(
        &s,
        &format!("Action=CreateSubnet&Version=2016-11-15&VpcId={vpc}&CidrBlock=10.9.1.0%2F24"),
    )
    .await;
    let subnet = subnet["Subnet"]["SubnetId"].as_str().unwrap().to_string();
    s.ok(
        "RegisterTaskDefinition",
        json!({"family": "eni", "networkMode": "awsvpc", "containerDefinitions": [{"name": "app", "image": "i", "memory": 8}]}),
    )
    .await;
    let run = |count: i32| {
        json!({"cluster": "default", "taskDefinition": "eni", "count": count,
               "networkConfiguration": {"awsvpcConfiguration": {"subnets": [subnet]}}})
    };
    let ip_of = |t: &Value| -> String {
        t["attachments"][0]["details"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "privateIPv4Address")
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // All at once: 251 addresses (a /24 less EC2's five), each to one task; then no more.
    let mut live = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..26 {
        if live.len() == 251 {
            break;
        }
        let v = s.ok("RunTask", run(10.min(251 - live.len() as i32))).await;
        assert_eq!(v["failures"], json!([]), "after {} tasks: {v}", live.len());
        for t in v["tasks"].as_array().unwrap() {
            assert!(
                seen.insert(ip_of(t)),
                "an address given twice: {}",
                ip_of(t)
            );
            live.push(t["taskArn"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(live.len(), 251);
    assert!(
        seen.contains("10.9.1.4") && seen.contains("10.9.1.254"),
        "the first and last assignable"
    );
    let e = s.err("RunTask", run(1), "ClientException").await;
    assert!(e.contains("No free IPv4 address"), "{e}");

    // Stopped ones give theirs back: 300 more tasks run in turn, ten at a time.
    for arn in live.drain(..) {
        agent.report(&arn, "STOPPED", Some(0)).await;
    }
    for _ in 0..30 {
        let v = s.ok("RunTask", run(10)).await;
        let arns: Vec<String> = v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["taskArn"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(arns.len(), 10, "{v}");
        for arn in arns {
            agent.report(&arn, "STOPPED", Some(0)).await;
        }
    }
    let subnets = ec2_call(
        &s,
        &format!("Action=DescribeSubnets&Version=2016-11-15&SubnetId.1={subnet}"),
    )
    .await;
    assert_eq!(
        subnets["Subnets"][0]["AvailableIpAddressCount"], 251,
        "{subnets}"
    );
    let enis = ec2_call(&s, "Action=DescribeNetworkInterfaces&Version=2016-11-15").await;
    assert_eq!(enis["NetworkInterfaces"], json!([]), "{enis}");
}

/// An agent of `default` started with `--auto-scaling-group GROUP`.
async fn join_group(s: &TestServer, group: &str) -> FakeAgent {
    let mut h = host(4096, "zone-a");
    h["attributes"]["berth.auto-scaling-group"] = json!(group);
    FakeAgent::join_host(s, h).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_scaling_group_provider_runs_its_tasks_on_its_group_only_and_reports_its_reservation(
) {
    let Some(cli) = common::aws_cli() else { return };
    let s = setup().await;
    let aws = |args: &[&str]| common::aws_json(&cli, &s, &s.secret_key, "ecs", args);
    let asg = "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:0b4d7c0e-1111-2222-3333-444455556666:autoScalingGroupName/web-asg";
    let created = aws(&[
        "create-capacity-provider",
        "--name",
        "web-cp",
        "--auto-scaling-group-provider",
        &format!("autoScalingGroupArn={asg},managedScaling={{status=DISABLED,targetCapacity=80}},managedTerminationProtection=DISABLED"),
        "--tags",
        "key=team,value=web",
    ])
    .unwrap();
    let cp = &created["capacityProvider"];
    assert_eq!(cp["name"], "web-cp");
    assert_eq!(cp["status"], "ACTIVE");
    assert_eq!(cp["type"], "EC2_AUTOSCALING");
    let arn = cp["capacityProviderArn"].as_str().unwrap();
    assert!(
        arn.starts_with("arn:aws:ecs:us-east-1:") && arn.ends_with(":capacity-provider/web-cp"),
        "{arn}"
    );
    let scaling = &cp["autoScalingGroupProvider"]["managedScaling"];
    assert_eq!(scaling["targetCapacity"], 80, "given: {cp}");
    assert_eq!(scaling["minimumScalingStepSize"], 1, "ECS's default: {cp}");
    assert_eq!(scaling["instanceWarmupPeriod"], 300, "ECS's default: {cp}");
    assert_eq!(cp["autoScalingGroupProvider"]["managedDraining"], "ENABLED");

    // Bad input: ECS's exceptions, nothing stored.
    for (args, error) in [
        (vec!["--name", "web-cp"], "ClientException"),
        (vec!["--name", "ecs-mine"], "InvalidParameterException"),
        (vec!["--name", "bad name"], "InvalidParameterException"),
        (vec!["--name", "other-cp"], "ClientException"),
    ] {
        let group = format!("autoScalingGroupArn={asg}");
        let mut full = vec!["create-capacity-provider"];
        full.extend(args.iter().copied());
        full.extend(["--auto-scaling-group-provider", &group]);
        let e = aws(&full).unwrap_err();
        assert!(e.contains(error), "{full:?}: {e}");
    }
    let e = aws(&[
        "create-capacity-provider",
        "--name",
        "other-cp",
        "--auto-scaling-group-provider",
        "autoScalingGroupArn=other-asg,managedScaling={targetCapacity=101}",
    ])
    .unwrap_err();
    assert!(
        e.contains("InvalidParameterException") && e.contains("targetCapacity"),
        "{e}"
    );
    let e = aws(&[
        "create-capacity-provider",
        "--name",
        "other-cp",
        "--auto-scaling-group-provider",
        "autoScalingGroupArn=other-asg,managedTerminationProtection=ENABLED",
    ])
    .unwrap_err();
    assert!(e.contains("managed scaling must also be enabled"), "{e}");
    let listed = aws(&["describe-capacity-providers"]).unwrap();
    let names: Vec<&str> = listed["capacityProviders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["FARGATE", "FARGATE_SPOT", "web-cp"], "{listed}");
    assert!(
        listed["capacityProviders"][2].get("tags").is_none(),
        "tags only when asked for"
    );
    let tagged = aws(&[
        "describe-capacity-providers",
        "--capacity-providers",
        "web-cp",
        "nope",
        "--include",
        "TAGS",
    ])
    .unwrap();
    assert_eq!(
        tagged["capacityProviders"][0]["tags"],
        json!([{"key": "team", "value": "web"}])
    );
    assert_eq!(tagged["failures"][0]["arn"], "nope");
    let page = aws(&[
        "describe-capacity-providers",
        "--max-results",
        "2",
        "--no-paginate",
    ])
    .unwrap();
    assert_eq!(page["capacityProviders"].as_array().unwrap().len(), 2);
    assert!(page["nextToken"].is_string(), "{page}");

    // Two instances: one of the group, one not.
    let mine = join_group(&s, "web-asg").await;
    let other = FakeAgent::join(&s, 4096).await;
    let ci = describe_instance(&s, &mine.arn).await;
    assert_eq!(ci["capacityProviderName"], "web-cp", "{ci}");
    assert!(describe_instance(&s, &other.arn)
        .await
        .get("capacityProviderName")
        .is_none());

    register_td(&s, "web", 64).await;
    let strategy = json!([{"capacityProvider": "web-cp", "weight": 1}]);
    let e = s
        .err(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web", "capacityProviderStrategy": strategy}),
            "InvalidParameterException",
        )
        .await;
    assert!(e.contains("not associated with the cluster"), "{e}");
    let e = aws(&[
        "put-cluster-capacity-providers",
        "--cluster",
        "default",
        "--capacity-providers",
        "web-cp",
        "FARGATE",
        "--default-capacity-provider-strategy",
        "capacityProvider=web-cp,weight=1",
        "capacityProvider=FARGATE,weight=1",
    ])
    .unwrap_err();
    assert!(e.contains("mix of capacity providers"), "{e}");
    aws(&[
        "put-cluster-capacity-providers",
        "--cluster",
        "default",
        "--capacity-providers",
        "web-cp",
        "FARGATE",
        "--default-capacity-provider-strategy",
        "capacityProvider=web-cp,weight=1",
    ])
    .unwrap();
    // An Auto Scaling group provider serves one cluster.
    s.ok("CreateCluster", json!({"clusterName": "second"}))
        .await;
    let e = aws(&[
        "put-cluster-capacity-providers",
        "--cluster",
        "second",
        "--capacity-providers",
        "web-cp",
        "--default-capacity-provider-strategy",
        "[]",
    ])
    .unwrap_err();
    assert!(e.contains("already associated with cluster default"), "{e}");

    // Tasks of the default strategy go to the group's instance only, as EC2 tasks of web-cp.
    let v = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "web", "count": 6}),
        )
        .await;
    let tasks = v["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 6, "{v}");
    let standalone: Vec<String> = tasks
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    for t in tasks {
        assert_eq!(t["containerInstanceArn"], mine.arn.as_str(), "{t}");
        assert_eq!(t["capacityProviderName"], "web-cp");
        assert_eq!(t["launchType"], "EC2");
    }
    let e = s
        .err(
            "CreateService",
            json!({"cluster": "default", "serviceName": "mon", "taskDefinition": "web",
                   "schedulingStrategy": "DAEMON", "capacityProviderStrategy": strategy}),
            "InvalidParameterException",
        )
        .await;
    assert!(e.contains("DAEMON"), "{e}");
    // A service on it too.
    s.ok(
        "CreateService",
        json!({"cluster": "default", "serviceName": "api", "taskDefinition": "web",
               "desiredCount": 2, "capacityProviderStrategy": strategy}),
    )
    .await;
    s.control.reconcile_services().await.unwrap();
    let placed = common::service_tasks(&s, "api", None).await;
    assert_eq!(placed.len(), 2, "the service placed its tasks");
    for t in &placed {
        assert_eq!(t["containerInstanceArn"], mine.arn.as_str(), "{t}");
        assert_eq!(t["capacityProviderName"], "web-cp");
    }

    // With managed scaling on (from now, so every publish sees the same state), the
    // reservation: one busy instance of one, and the service has what it wants.
    aws(&[
        "update-capacity-provider",
        "--name",
        "web-cp",
        "--auto-scaling-group-provider",
        "managedScaling={status=ENABLED}",
    ])
    .unwrap();
    s.control.publish_insights().await.unwrap();
    let cw = |args: &[&str]| common::aws_json(&cli, &s, &s.secret_key, "cloudwatch", args);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let stats = cw(&[
        "get-metric-statistics",
        "--namespace",
        "AWS/ECS/ManagedScaling",
        "--metric-name",
        "CapacityProviderReservation",
        "--dimensions",
        "Name=CapacityProviderName,Value=web-cp",
        "Name=ClusterName,Value=default",
        "--start-time",
        &(now - 600).to_string(),
        "--end-time",
        &(now + 600).to_string(),
        "--period",
        "60",
        "--statistics",
        "Minimum",
        "Maximum",
    ])
    .unwrap();
    let point = &stats["Datapoints"][0];
    assert_eq!(
        (&point["Minimum"], &point["Maximum"]),
        (&json!(100.0), &json!(100.0)),
        "one instance needed, one there: {stats}"
    );

    // In use: neither removed from the cluster nor deleted.
    let e = aws(&[
        "put-cluster-capacity-providers",
        "--cluster",
        "default",
        "--capacity-providers",
        "FARGATE",
        "--default-capacity-provider-strategy",
        "[]",
    ])
    .unwrap_err();
    assert!(e.contains("ResourceInUseException"), "{e}");
    let e = aws(&["delete-capacity-provider", "--capacity-provider", "web-cp"]).unwrap_err();
    assert!(
        e.contains("ClientException") && e.contains("associated with cluster: default"),
        "{e}"
    );
    let updated = aws(&[
        "update-capacity-provider",
        "--name",
        "web-cp",
        "--auto-scaling-group-provider",
        "managedScaling={status=DISABLED}",
    ])
    .unwrap();
    let scaling = &updated["capacityProvider"]["autoScalingGroupProvider"]["managedScaling"];
    assert_eq!(scaling["status"], "DISABLED");
    assert_eq!(scaling["targetCapacity"], 80, "kept: {updated}");

    // Once no service and no cluster uses it, it goes.
    s.ok(
        "DeleteService",
        json!({"cluster": "default", "service": "api", "force": true}),
    )
    .await;
    // A draining service still uses it; once its tasks stop it is gone.
    for t in &placed {
        mine.report(t["taskArn"].as_str().unwrap(), "STOPPED", Some(0))
            .await;
    }
    s.control.reconcile_services().await.unwrap();
    let release = || {
        aws(&[
            "put-cluster-capacity-providers",
            "--cluster",
            "default",
            "--capacity-providers",
            "--default-capacity-provider-strategy",
            "[]",
        ])
    };
    // The six standalone tasks still run on it.
    let e = release().unwrap_err();
    assert!(e.contains("ResourceInUseException"), "{e}");
    for arn in &standalone {
        mine.report(arn, "STOPPED", Some(0)).await;
    }
    release().unwrap();
    let gone = aws(&["delete-capacity-provider", "--capacity-provider", "web-cp"]).unwrap();
    assert_eq!(gone["capacityProvider"]["status"], "INACTIVE");
    let missing = aws(&[
        "describe-capacity-providers",
        "--capacity-providers",
        "web-cp",
    ])
    .unwrap();
    assert_eq!(missing["failures"][0]["reason"], "MISSING");
    let e = aws(&["delete-capacity-provider", "--capacity-provider", "web-cp"]).unwrap_err();
    assert!(e.contains("does not exist"), "{e}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_of_a_source_group_reaches_other_agents_rules_at_once() {
    let s = setup().await;
    let eni_host = || {
        let mut h = host(4096, "zone-a");
        h["attributes"]["ecs.capability.task-eni"] = Value::Null;
        h["attributes"]["com.amazonaws.ecs.capability.docker-remote-api.1.18"] = Value::Null;
        h
    };
    let one = FakeAgent::join_host(&s, eni_host()).await;
    let two = FakeAgent::join_host(&s, eni_host()).await;
    let id = |v: &Value, path: [&str; 2]| v[path[0]][path[1]].as_str().unwrap().to_string();
    let vpc = ec2_call(
        &s,
        "Action=CreateVpc&Version=2016-11-15&CidrBlock=10.8.0.0%2F16",
    )
    .await;
    let vpc = id(&vpc, ["Vpc", "VpcId"]);
    let subnet = ec2_call(
        &s,
        &format!("Action=CreateSubnet&Version=2016-11-15&VpcId={vpc}&CidrBlock=10.8.1.0%2F24"),
    )
    .await;
    let subnet = id(&subnet, ["Subnet", "SubnetId"]);
    let group = |name: &str| {
        format!(
            "Action=CreateSecurityGroup&Version=2016-11-15&GroupName={name}&GroupDescription={name}&VpcId={vpc}"
        )
    };
    let client = ec2_call(&s, &group("client")).await["GroupId"]
        .as_str()
        .unwrap()
        .to_string();
    let server = ec2_call(&s, &group("server")).await["GroupId"]
        .as_str()
        .unwrap()
        .to_string();
    ec2_call(
        &s,
        &format!(
            "Action=AuthorizeSecurityGroupIngress&Version=2016-11-15&GroupId={server}&IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=80&IpPermissions.1.ToPort=80&IpPermissions.1.Groups.1.GroupId={client}"
        ),
    )
    .await;
    s.ok(
        "RegisterTaskDefinition",
        json!({"family": "eni", "networkMode": "awsvpc",
               "containerDefinitions": [{"name": "app", "image": "i", "memory": 8}]}),
    )
    .await;
    let start = |on: &str, sg: &str| {
        json!({"cluster": "default", "taskDefinition": "eni", "containerInstances": [on],
               "networkConfiguration": {"awsvpcConfiguration": {
                   "subnets": [subnet], "securityGroups": [sg]}}})
    };
    s.ok("StartTask", start(&one.arn, &server)).await;
    let first = one.poll(None, 0).await;
    let version = first.body["version"].as_str().unwrap().to_string();
    let ingress = |p: &Value| p["security_groups"][&server]["ingress"].clone();
    assert_eq!(
        ingress(&first.body),
        json!([]),
        "no client yet: {}",
        first.body
    );

    // A client starts on the other agent: the first's held poll answers with its address.
    let held = tokio::spawn({
        let (endpoint, arn, ak, sk) = (
            one.endpoint.clone(),
            one.arn.clone(),
            one.ak.clone(),
            one.sk.clone(),
        );
        async move {
            let agent = FakeAgent {
                endpoint,
                arn,
                ak,
                sk,
            };
            let t0 = std::time::Instant::now();
            let a = agent.poll(Some(&version), 10_000).await;
            (a, t0.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = s.ok("StartTask", start(&two.arn, &client)).await;
    let b_ip = b["tasks"][0]["attachments"][0]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "privateIPv4Address")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let (answer, waited) = held.await.unwrap();
    assert!(
        waited < Duration::from_secs(5),
        "the held poll answered after {waited:?}, not when the client started"
    );
    assert_eq!(
        ingress(&answer.body),
        json!([{"protocol": "tcp", "ports": [80, 80], "cidrs": [format!("{b_ip}/32")]}]),
        "{}",
        answer.body
    );
    s.stop().await;
}

/// An agent of the pool of Fargate capacity.
async fn join_pool(s: &TestServer) -> FakeAgent {
    let mut h = host(8192, "us-east-1a");
    h["attributes"]["ecs.capability.task-eni"] = Value::Null;
    h["attributes"]["com.amazonaws.ecs.capability.docker-remote-api.1.18"] = Value::Null;
    h["attributes"]["ecs.capability.task-cpu-mem-limit"] = Value::Null;
    h["attributes"]["berth.capacity"] = json!("FARGATE");
    FakeAgent::join_cluster(s, "~fargate", h).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_fargate_capacity_moves_its_service_tasks_elsewhere() {
    let s = setup().await;
    let a = join_pool(&s).await;
    let b = join_pool(&s).await;
    let vpc = ec2_call(
        &s,
        "Action=CreateVpc&Version=2016-11-15&CidrBlock=10.7.0.0%2F16",
    )
    .await;
    let vpc = vpc["Vpc"]["VpcId"].as_str().unwrap().to_string();
    let subnet = ec2_call(
        &s,
        &format!(
            "Action=CreateSubnet&Version=2016-11-15&VpcId={vpc}&CidrBlock=10.7.1.0%2F24&AvailabilityZone=us-east-1a"
        ),
    )
    .await;
    let subnet = subnet["Subnet"]["SubnetId"].as_str().unwrap().to_string();
    s.ok(
        "RegisterTaskDefinition",
        json!({"family": "web", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc",
               "cpu": "256", "memory": "512",
               "containerDefinitions": [{"name": "app", "image": "i"}]}),
    )
    .await;
    s.ok(
        "CreateService",
        json!({"cluster": "default", "serviceName": "web", "taskDefinition": "web",
               "desiredCount": 1, "launchType": "FARGATE",
               "networkConfiguration": {"awsvpcConfiguration": {"subnets": [subnet]}}}),
    )
    .await;
    s.control.reconcile_services().await.unwrap();
    let first = common::service_tasks(&s, "web", None).await;
    assert_eq!(
        first.len(),
        1,
        "{}",
        s.ok(
            "DescribeServices",
            json!({"cluster": "default", "services": ["web"]})
        )
        .await["services"][0]["events"]
    );
    let first_arn = first[0]["taskArn"].as_str().unwrap().to_string();
    // FARGATE tasks show no container instance: the pool agent whose poll carries it holds it.
    assert!(first[0].get("containerInstanceArn").is_none(), "{first:#?}");
    let on_a = a.poll(None, 0).await.body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["task_arn"] == first_arn.as_str());
    let (holder, other) = if on_a { (&a, &b) } else { (&b, &a) };
    s.ok(
        "UpdateContainerInstancesState",
        json!({"cluster": "~fargate", "containerInstances": [holder.arn], "status": "DRAINING"}),
    )
    .await;
    s.control.reconcile_services().await.unwrap();
    let now = common::service_tasks(&s, "web", None).await;
    let replacement: Vec<&Value> = now
        .iter()
        .filter(|t| t["taskArn"] != first_arn.as_str())
        .collect();
    assert_eq!(replacement.len(), 1, "a replacement was started: {now:#?}");
    let arn = replacement[0]["taskArn"].as_str().unwrap();
    let on_other = other.poll(None, 0).await.body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["task_arn"] == arn);
    assert!(
        on_other,
        "the replacement runs on the capacity that is not draining"
    );
    s.stop().await;
}
