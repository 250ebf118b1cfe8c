//! Every operation and its errors over the wire, each answer checked against botocore's model.
#![allow(clippy::unwrap_used)]

mod common;
use common::{task_def, TestServer};
use serde_json::json;

#[tokio::test]
async fn clusters_lifecycle() {
    let s = TestServer::start().await;
    let c = s.ok("CreateCluster", json!({"clusterName": "prod", "tags": [{"key": "team", "value": "web"}],
        "settings": [{"name": "containerInsights", "value": "enabled"}],
        "configuration": {"executeCommandConfiguration": {"logging": "DEFAULT"}},
        "capacityProviders": ["FARGATE"], "defaultCapacityProviderStrategy": [{"capacityProvider": "FARGATE", "weight": 1}]})).await;
    assert_eq!(
        c["cluster"]["clusterArn"],
        "arn:aws:ecs:us-east-1:000000000000:cluster/prod"
    );
    assert_eq!(c["cluster"]["status"], "ACTIVE");
    assert_eq!(c["cluster"]["capacityProviders"], json!(["FARGATE"]));
    // Idempotent on name: the same cluster comes back.
    let again = s.ok("CreateCluster", json!({"clusterName": "prod"})).await;
    assert_eq!(
        again["cluster"]["settings"][0]["value"], "enabled",
        "idempotent create keeps the original settings"
    );
    // The default cluster.
    let d = s.ok("CreateCluster", json!({})).await;
    assert_eq!(d["cluster"]["clusterName"], "default");

    let desc = s.ok("DescribeClusters", json!({"clusters": ["prod", "arn:aws:ecs:us-east-1:000000000000:cluster/default", "ghost"],
        "include": ["TAGS", "SETTINGS", "STATISTICS", "CONFIGURATIONS"]})).await;
    assert_eq!(desc["clusters"].as_array().unwrap().len(), 2);
    assert_eq!(
        desc["clusters"][0]["tags"],
        json!([{"key": "team", "value": "web"}])
    );
    assert_eq!(
        desc["clusters"][0]["configuration"]["executeCommandConfiguration"]["logging"],
        "DEFAULT"
    );
    assert_eq!(desc["clusters"][0]["runningTasksCount"], 0);
    assert!(desc["clusters"][0]["statistics"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "runningEC2TasksCount"));
    assert_eq!(
        desc["failures"],
        json!([{"arn": "arn:aws:ecs:us-east-1:000000000000:cluster/ghost", "reason": "MISSING"}])
    );
    let plain = s
        .ok("DescribeClusters", json!({"clusters": ["prod"]}))
        .await;
    assert!(
        plain["clusters"][0].get("tags").is_none()
            && plain["clusters"][0].get("settings").is_none(),
        "include governs optional parts"
    );

    let u = s.ok("UpdateClusterSettings", json!({"cluster": "prod", "settings": [{"name": "containerInsights", "value": "disabled"}]})).await;
    assert_eq!(
        u["cluster"]["settings"],
        json!([{"name": "containerInsights", "value": "disabled"}])
    );
    let u = s.ok("UpdateCluster", json!({"cluster": "prod", "configuration": {"executeCommandConfiguration": {"logging": "NONE"}}})).await;
    assert_eq!(
        u["cluster"]["configuration"]["executeCommandConfiguration"]["logging"],
        "NONE"
    );

    let del = s.ok("DeleteCluster", json!({"cluster": "prod"})).await;
    assert_eq!(del["cluster"]["status"], "INACTIVE");
    let list = s.ok("ListClusters", json!({})).await;
    assert_eq!(
        list["clusterArns"],
        json!(["arn:aws:ecs:us-east-1:000000000000:cluster/default"]),
        "inactive clusters are not listed"
    );
    let desc = s
        .ok("DescribeClusters", json!({"clusters": ["prod"]}))
        .await;
    assert_eq!(
        desc["clusters"][0]["status"], "INACTIVE",
        "deleted clusters stay describable"
    );
    s.err(
        "DeleteCluster",
        json!({"cluster": "prod"}),
        "ClusterNotFoundException",
    )
    .await;
    s.err(
        "UpdateCluster",
        json!({"cluster": "nope"}),
        "ClusterNotFoundException",
    )
    .await;
    // Re-creating a deleted cluster makes it ACTIVE again, with only the new tags.
    s.ok("CreateCluster", json!({"clusterName": "prod"})).await;
    let t = s
        .ok(
            "ListTagsForResource",
            json!({"resourceArn": "arn:aws:ecs:us-east-1:000000000000:cluster/prod"}),
        )
        .await;
    assert_eq!(t["tags"], json!([]));
    s.stop().await;
}

#[tokio::test]
async fn delete_cluster_refuses_while_it_holds_things() {
    let s = TestServer::start().await;
    s.ok("CreateCluster", json!({"clusterName": "busy"})).await;
    // What later issues write under these prefixes is what DeleteCluster counts.
    for (prefix, error) in [
        ("services/busy/web", "ClusterContainsServicesException"),
        (
            "instances/busy/i-1",
            "ClusterContainsContainerInstancesException",
        ),
        ("tasks/busy/t-1", "ClusterContainsTasksException"),
    ] {
        s.control
            .store
            .txn(berth_store::Txn::new().put(prefix, b"{}".to_vec()))
            .await
            .unwrap();
        let msg = s
            .err("DeleteCluster", json!({"cluster": "busy"}), error)
            .await;
        assert!(
            msg.starts_with("The Cluster cannot be deleted while"),
            "ECS's words: {msg}"
        );
        let desc = s
            .ok("DescribeClusters", json!({"clusters": ["busy"]}))
            .await;
        assert_eq!(desc["clusters"][0]["status"], "ACTIVE");
        s.control
            .store
            .txn(berth_store::Txn::new().delete(prefix))
            .await
            .unwrap();
    }
    s.ok("DeleteCluster", json!({"cluster": "busy"})).await;
    s.stop().await;
}

#[tokio::test]
async fn cluster_validation() {
    let s = TestServer::start().await;
    let m = s
        .err(
            "CreateCluster",
            json!({"clusterName": "bad name!"}),
            "InvalidParameterException",
        )
        .await;
    assert!(m.contains("'bad name!'"), "{m}");
    s.err(
        "CreateCluster",
        json!({"clusterName": "x".repeat(256)}),
        "InvalidParameterException",
    )
    .await;
    let m = s.err("CreateCluster", json!({"clusterName": "a", "settings": [{"name": "containerInsights", "value": "maybe"}]}), "InvalidParameterException").await;
    assert!(m.contains("'maybe'"), "{m}");
    let m = s
        .err(
            "CreateCluster",
            json!({"clusterName": "a", "capacityProviders": ["MINE"]}),
            "InvalidParameterException",
        )
        .await;
    assert!(m.contains("capacity provider MINE does not exist"), "{m}");
    let m = s
        .err(
            "CreateCluster",
            json!({"clusterName": "a", "tags": [{"key": "aws:x", "value": "v"}]}),
            "InvalidParameterException",
        )
        .await;
    assert!(m.contains("aws:"), "{m}");
    let tags: Vec<_> = (0..51)
        .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
        .collect();
    s.err(
        "CreateCluster",
        json!({"clusterName": "a", "tags": tags}),
        "InvalidParameterException",
    )
    .await;
    s.err(
        "DescribeClusters",
        json!({"include": ["EVERYTHING"]}),
        "InvalidParameterException",
    )
    .await;
    let list = s.ok("ListClusters", json!({})).await;
    assert_eq!(
        list["clusterArns"],
        json!([]),
        "rejected creates stored nothing"
    );
    s.stop().await;
}

#[tokio::test]
async fn list_clusters_paginates() {
    let s = TestServer::start().await;
    for i in 0..5 {
        s.ok("CreateCluster", json!({"clusterName": format!("c{i}")}))
            .await;
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let mut req = json!({"maxResults": 2});
        if let Some(t) = &token {
            req["nextToken"] = json!(t);
        }
        let page = s.ok("ListClusters", req).await;
        seen.extend(
            page["clusterArns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().rsplit('/').next().unwrap().to_string()),
        );
        token = page["nextToken"].as_str().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["c0", "c1", "c2", "c3", "c4"]);
    s.err(
        "ListClusters",
        json!({"maxResults": 0}),
        "InvalidParameterException",
    )
    .await;
    s.err(
        "ListClusters",
        json!({"maxResults": 101}),
        "InvalidParameterException",
    )
    .await;
    s.err(
        "ListClusters",
        json!({"nextToken": "not-a-token"}),
        "InvalidParameterException",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn task_definition_revisions_and_lifecycle() {
    let s = TestServer::start().await;
    let mut def = task_def("web");
    def["tags"] = json!([{"key": "app", "value": "web"}]);
    def["containerDefinitions"][0]["healthCheck"] = json!({"command": ["CMD-SHELL", "true"]});
    def["containerDefinitions"][0]["logConfiguration"] =
        json!({"logDriver": "json-file", "options": {"max-size": "10m"}});
    def["containerDefinitions"][0]["linuxParameters"] =
        json!({"initProcessEnabled": true, "capabilities": {"add": ["NET_ADMIN"]}});
    def["containerDefinitions"][0]["dockerLabels"] = json!({"a": "b"});
    let r1 = s.ok("RegisterTaskDefinition", def.clone()).await;
    let td = &r1["taskDefinition"];
    assert_eq!(
        td["taskDefinitionArn"],
        "arn:aws:ecs:us-east-1:000000000000:task-definition/web:1"
    );
    assert_eq!(
        (td["revision"].as_i64(), td["status"].as_str()),
        (Some(1), Some("ACTIVE"))
    );
    assert_eq!(td["compatibilities"], json!(["EXTERNAL", "EC2"]));
    assert!(
        td["registeredAt"].as_f64().unwrap() > 1.6e9,
        "registeredAt is epoch seconds"
    );
    assert_eq!(
        td["registeredBy"],
        "arn:aws:iam::000000000000:user/berth-admin"
    );
    assert_eq!(
        td["containerDefinitions"][0]["linuxParameters"]["capabilities"]["add"],
        json!(["NET_ADMIN"]),
        "every member is kept"
    );
    assert_eq!(td["containerDefinitions"][0]["essential"], true);
    assert_eq!(td["containerDefinitions"][0]["healthCheck"]["interval"], 30);
    let attrs: Vec<&str> = td["requiresAttributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(
        attrs.contains(&"ecs.capability.container-health-check"),
        "{attrs:?}"
    );
    assert!(
        attrs.contains(&"com.amazonaws.ecs.capability.logging-driver.json-file"),
        "{attrs:?}"
    );
    assert_eq!(r1["tags"], json!([{"key": "app", "value": "web"}]));

    let r2 = s.ok("RegisterTaskDefinition", task_def("web")).await;
    assert_eq!(r2["taskDefinition"]["revision"], 2);
    s.ok("RegisterTaskDefinition", task_def("api")).await;

    let latest = s
        .ok("DescribeTaskDefinition", json!({"taskDefinition": "web"}))
        .await;
    assert_eq!(latest["taskDefinition"]["revision"], 2);
    let one = s
        .ok(
            "DescribeTaskDefinition",
            json!({"taskDefinition": "web:1", "include": ["TAGS"]}),
        )
        .await;
    assert_eq!(one["tags"], json!([{"key": "app", "value": "web"}]));
    let by_arn = s
        .ok(
            "DescribeTaskDefinition",
            json!({"taskDefinition": "arn:aws:ecs:us-east-1:000000000000:task-definition/web:1"}),
        )
        .await;
    assert_eq!(by_arn["taskDefinition"]["revision"], 1);
    s.err(
        "DescribeTaskDefinition",
        json!({"taskDefinition": "web:9"}),
        "ClientException",
    )
    .await;
    s.err(
        "DescribeTaskDefinition",
        json!({"taskDefinition": "nope"}),
        "ClientException",
    )
    .await;
    let m = s
        .err(
            "DescribeTaskDefinition",
            json!({"taskDefinition": "web:zero"}),
            "InvalidParameterException",
        )
        .await;
    assert_eq!(m, "Invalid revision number. Number: zero");

    // Deregister: INACTIVE, still describable by revision; the family answers with the latest ACTIVE.
    let m = s
        .err(
            "DeregisterTaskDefinition",
            json!({"taskDefinition": "web"}),
            "ClientException",
        )
        .await;
    assert!(m.contains("must name a revision"), "{m}");
    let d = s
        .ok(
            "DeregisterTaskDefinition",
            json!({"taskDefinition": "web:2"}),
        )
        .await;
    assert_eq!(d["taskDefinition"]["status"], "INACTIVE");
    assert!(d["taskDefinition"]["deregisteredAt"].is_number());
    assert_eq!(
        s.ok("DescribeTaskDefinition", json!({"taskDefinition": "web:2"}))
            .await["taskDefinition"]["status"],
        "INACTIVE"
    );
    assert_eq!(
        s.ok("DescribeTaskDefinition", json!({"taskDefinition": "web"}))
            .await["taskDefinition"]["revision"],
        1
    );

    let arns = |v: serde_json::Value| {
        v["taskDefinitionArns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().rsplit('/').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        arns(s.ok("ListTaskDefinitions", json!({})).await),
        ["api:1", "web:1"]
    );
    assert_eq!(
        arns(
            s.ok("ListTaskDefinitions", json!({"status": "INACTIVE"}))
                .await
        ),
        ["web:2"]
    );
    assert_eq!(
        arns(
            s.ok("ListTaskDefinitions", json!({"familyPrefix": "we"}))
                .await
        ),
        ["web:1"]
    );
    assert_eq!(
        arns(s.ok("ListTaskDefinitions", json!({"sort": "DESC"})).await),
        ["web:1", "api:1"]
    );
    let p1 = s.ok("ListTaskDefinitions", json!({"maxResults": 1})).await;
    let p2 = s
        .ok(
            "ListTaskDefinitions",
            json!({"maxResults": 1, "nextToken": p1["nextToken"]}),
        )
        .await;
    assert_eq!(
        (arns(p1), arns(p2.clone())),
        (vec!["api:1".to_string()], vec!["web:1".to_string()])
    );
    assert!(p2.get("nextToken").is_none());
    s.err(
        "ListTaskDefinitions",
        json!({"status": "GONE"}),
        "InvalidParameterException",
    )
    .await;

    let fams = s.ok("ListTaskDefinitionFamilies", json!({})).await;
    assert_eq!(fams["families"], json!(["api", "web"]));
    s.ok(
        "DeregisterTaskDefinition",
        json!({"taskDefinition": "api:1"}),
    )
    .await;
    assert_eq!(
        s.ok("ListTaskDefinitionFamilies", json!({"status": "ACTIVE"}))
            .await["families"],
        json!(["web"])
    );
    assert_eq!(
        s.ok("ListTaskDefinitionFamilies", json!({"status": "INACTIVE"}))
            .await["families"],
        json!(["api"])
    );

    // Delete: only INACTIVE revisions; per-item failures.
    let del = s
        .ok(
            "DeleteTaskDefinitions",
            json!({"taskDefinitions": ["web:2", "web:1", "web:7"]}),
        )
        .await;
    assert_eq!(del["taskDefinitions"][0]["status"], "DELETE_IN_PROGRESS");
    assert!(del["taskDefinitions"][0]["deleteRequestedAt"].is_number());
    let reasons: Vec<&str> = del["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("still in ACTIVE status"), "{reasons:?}");
    assert_eq!(reasons[1], "MISSING");
    s.err(
        "DeleteTaskDefinitions",
        json!({"taskDefinitions": []}),
        "InvalidParameterException",
    )
    .await;
    // Revision numbers are never reused.
    assert_eq!(
        s.ok("RegisterTaskDefinition", task_def("web")).await["taskDefinition"]["revision"],
        3
    );
    s.stop().await;
}

#[tokio::test]
async fn task_definition_validation_names_field_and_value() {
    let s = TestServer::start().await;
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (
            json!({"family": "bad family", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64}]}),
            "ClientException",
            "'bad family'",
        ),
        (
            json!({"family": "f", "containerDefinitions": []}),
            "ClientException",
            "Container list cannot be empty.",
        ),
        (
            json!({"family": "f", "ephemeralStorage": {"sizeInGiB": 20}, "containerDefinitions": [{"name": "a", "image": "i", "memory": 64}]}),
            "InvalidParameterException",
            "between 21 and 200 GiB",
        ),
        (
            json!({"family": "f", "containerDefinitions": (0..11).map(|i| json!({"name": format!("c{i}"), "image": "i", "memory": 8})).collect::<Vec<_>>()}),
            "ClientException",
            "at most 10",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64}, {"name": "a", "image": "i", "memory": 64}]}),
            "ClientException",
            "'a' is used more than once",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64, "essential": false}]}),
            "ClientException",
            "essential",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i"}]}),
            "ClientException",
            "At least one of 'memory' or 'memoryReservation'",
        ),
        (
            json!({"family": "f", "cpu": "2 cores", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64}]}),
            "ClientException",
            "'2 cores'",
        ),
        (
            json!({"family": "f", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512", "containerDefinitions": [{"name": "a", "image": "i"}]}),
            "ClientException",
            "awsvpc",
        ),
        (
            json!({"family": "f", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "512", "memory": "8 GB", "containerDefinitions": [{"name": "a", "image": "i"}]}),
            "ClientException",
            "512 CPU, 8192 memory",
        ),
        (
            json!({"family": "f", "networkMode": "awsvpc", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64, "portMappings": [{"containerPort": 80, "hostPort": 81}]}]}),
            "ClientException",
            "hostPort 81",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64, "portMappings": [{"containerPort": 70000}]}]}),
            "InvalidParameterException",
            "70000",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64, "healthCheck": {"command": ["CMD", "x"], "interval": 1}}]}),
            "ClientException",
            "interval 1",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64, "dependsOn": [{"containerName": "ghost", "condition": "START"}]}]}),
            "ClientException",
            "'ghost'",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64, "dependsOn": [{"containerName": "b", "condition": "SUCCESS"}]}, {"name": "b", "image": "i", "memory": 64}]}),
            "ClientException",
            "essential",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64, "mountPoints": [{"sourceVolume": "data", "containerPath": "/d"}]}]}),
            "ClientException",
            "'data'",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64, "logConfiguration": {"logDriver": "loki"}}]}),
            "InvalidParameterException",
            "'loki'",
        ),
        (
            json!({"family": "f", "networkMode": "overlay", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64}]}),
            "InvalidParameterException",
            "'overlay'",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64, "command": ["x".repeat(70 * 1024)]}]}),
            "ClientException",
            "64 KiB",
        ),
        (
            json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "memory": 64}], "tags": [{"key": "", "value": "v"}]}),
            "InvalidParameterException",
            "tag key",
        ),
        (
            json!({"containerDefinitions": [{"name": "a", "image": "i", "memory": 64}]}),
            "InvalidParameterException",
            "'family'",
        ),
    ];
    for (body, error, needle) in cases {
        let msg = s.err("RegisterTaskDefinition", body.clone(), error).await;
        assert!(
            msg.contains(needle),
            "message {msg:?} should contain {needle:?} for {body}"
        );
    }
    let fams = s.ok("ListTaskDefinitionFamilies", json!({})).await;
    assert_eq!(fams["families"], json!([]), "nothing rejected was stored");
    // The valid Fargate shape is accepted and marked compatible.
    let ok = s.ok("RegisterTaskDefinition", json!({"family": "f", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "0.5 vCPU", "memory": "1 GB", "containerDefinitions": [{"name": "a", "image": "i", "portMappings": [{"containerPort": 80}]}]})).await;
    assert_eq!(ok["taskDefinition"]["cpu"], "512");
    assert_eq!(ok["taskDefinition"]["memory"], "1024");
    assert_eq!(
        ok["taskDefinition"]["compatibilities"],
        json!(["EC2", "FARGATE"])
    );
    assert_eq!(
        ok["taskDefinition"]["containerDefinitions"][0]["portMappings"][0]["hostPort"],
        80
    );
    s.stop().await;
}

#[tokio::test]
async fn tags_on_clusters_and_task_definitions() {
    let s = TestServer::start().await;
    let c = s.ok("CreateCluster", json!({"clusterName": "t"})).await;
    let arn = c["cluster"]["clusterArn"].as_str().unwrap().to_string();
    s.ok("TagResource", json!({"resourceArn": arn, "tags": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]})).await;
    s.ok(
        "TagResource",
        json!({"resourceArn": arn, "tags": [{"key": "a", "value": "3"}]}),
    )
    .await;
    s.ok(
        "UntagResource",
        json!({"resourceArn": arn, "tagKeys": ["b"]}),
    )
    .await;
    assert_eq!(
        s.ok("ListTagsForResource", json!({"resourceArn": arn}))
            .await["tags"],
        json!([{"key": "a", "value": "3"}])
    );
    let td = s.ok("RegisterTaskDefinition", task_def("tagged")).await;
    let td_arn = td["taskDefinition"]["taskDefinitionArn"]
        .as_str()
        .unwrap()
        .to_string();
    s.ok(
        "TagResource",
        json!({"resourceArn": td_arn, "tags": [{"key": "x", "value": "y"}]}),
    )
    .await;
    assert_eq!(
        s.ok(
            "DescribeTaskDefinition",
            json!({"taskDefinition": "tagged:1", "include": ["TAGS"]})
        )
        .await["tags"],
        json!([{"key": "x", "value": "y"}])
    );
    s.err(
        "TagResource",
        json!({"resourceArn": "not-an-arn", "tags": []}),
        "InvalidParameterException",
    )
    .await;
    s.err(
        "TagResource",
        json!({"resourceArn": "arn:aws:ecs:us-east-1:000000000000:cluster/ghost", "tags": []}),
        "ClusterNotFoundException",
    )
    .await;
    s.err("TagResource", json!({"resourceArn": "arn:aws:ecs:us-east-1:000000000000:task-definition/ghost:1", "tags": []}), "ResourceNotFoundException").await;
    s.err(
        "TagResource",
        json!({"resourceArn": arn, "tags": [{"key": "aws:reserved", "value": "v"}]}),
        "InvalidParameterException",
    )
    .await;
    let many: Vec<_> = (0..50)
        .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
        .collect();
    let m = s
        .err(
            "TagResource",
            json!({"resourceArn": arn, "tags": many}),
            "InvalidParameterException",
        )
        .await;
    assert!(m.contains("at most 50"), "{m}");
    assert_eq!(
        s.ok("ListTagsForResource", json!({"resourceArn": arn}))
            .await["tags"],
        json!([{"key": "a", "value": "3"}]),
        "a refused tag write changed nothing"
    );
    s.err(
        "TagResource",
        json!({"tags": []}),
        "InvalidParameterException",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn account_settings() {
    let s = TestServer::start().await;
    let eff = s
        .ok(
            "ListAccountSettings",
            json!({"effectiveSettings": true, "name": "taskLongArnFormat"}),
        )
        .await;
    assert_eq!(
        eff["settings"],
        json!([{"name": "taskLongArnFormat", "value": "enabled", "principalArn": "arn:aws:iam::000000000000:root", "type": "aws_managed"}])
    );
    let put = s
        .ok(
            "PutAccountSetting",
            json!({"name": "containerInsights", "value": "enabled"}),
        )
        .await;
    assert_eq!(
        put["setting"]["principalArn"],
        "arn:aws:iam::000000000000:user/berth-admin"
    );
    s.ok(
        "PutAccountSetting",
        json!({"name": "serviceLongArnFormat", "value": "enabled"}),
    )
    .await;
    let own = s.ok("ListAccountSettings", json!({})).await;
    assert_eq!(own["settings"].as_array().unwrap().len(), 2);
    let m = s
        .err(
            "PutAccountSetting",
            json!({"name": "taskLongArnFormat", "value": "disabled"}),
            "InvalidParameterException",
        )
        .await;
    assert!(m.contains("cannot be disabled"), "{m}");
    s.err(
        "PutAccountSetting",
        json!({"name": "containerInsights", "value": "sometimes"}),
        "InvalidParameterException",
    )
    .await;
    s.err(
        "PutAccountSetting",
        json!({"name": "noSuchSetting", "value": "on"}),
        "InvalidParameterException",
    )
    .await;
    s.ok(
        "PutAccountSettingDefault",
        json!({"name": "awsvpcTrunking", "value": "enabled"}),
    )
    .await;
    let all = s
        .ok(
            "ListAccountSettings",
            json!({"effectiveSettings": true, "maxResults": 10}),
        )
        .await;
    assert_eq!(all["settings"].as_array().unwrap().len(), 10);
    assert!(all["nextToken"].is_string(), "11 settings over pages of 10");
    let rest = s
        .ok(
            "ListAccountSettings",
            json!({"effectiveSettings": true, "nextToken": all["nextToken"]}),
        )
        .await;
    assert_eq!(rest["settings"].as_array().unwrap().len(), 1);
    let trunk = s
        .ok(
            "ListAccountSettings",
            json!({"effectiveSettings": true, "name": "awsvpcTrunking"}),
        )
        .await;
    assert_eq!(
        trunk["settings"][0]["value"], "enabled",
        "the account default applies"
    );
    s.ok("DeleteAccountSetting", json!({"name": "containerInsights"}))
        .await;
    assert_eq!(
        s.ok("ListAccountSettings", json!({})).await["settings"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    s.err(
        "ListAccountSettings",
        json!({"maxResults": 11}),
        "InvalidParameterException",
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn concurrent_registrations_get_distinct_revisions() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let mut handles = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            s.ok("RegisterTaskDefinition", task_def("race")).await["taskDefinition"]["revision"]
                .as_i64()
                .unwrap()
        }));
    }
    let mut revs = Vec::new();
    for h in handles {
        revs.push(h.await.unwrap());
    }
    revs.sort();
    assert_eq!(
        revs,
        (1..=16).collect::<Vec<_>>(),
        "every acknowledged registration has its own revision"
    );
}

/// ECS's own words, exactly, for the errors client test suites assert on.
#[tokio::test]
async fn errors_carry_ecs_exact_messages() {
    let s = TestServer::start().await;
    s.ok("CreateCluster", json!({"clusterName": "c"})).await;
    s.ok("RegisterTaskDefinition", task_def("web")).await;
    s.ok(
        "CreateService",
        json!({"cluster": "c", "serviceName": "api", "taskDefinition": "web", "desiredCount": 0}),
    )
    .await;
    let table = [
        (
            "ListServices",
            json!({"cluster": "nope"}),
            "ClusterNotFoundException",
            "Cluster not found.",
        ),
        (
            "UpdateService",
            json!({"cluster": "c", "service": "ghost", "desiredCount": 1}),
            "ServiceNotFoundException",
            "Service not found.",
        ),
        (
            "DescribeTaskDefinition",
            json!({"taskDefinition": "nope:1"}),
            "ClientException",
            "Unable to describe task definition.",
        ),
        (
            "StopTask",
            json!({"cluster": "c", "task": "0123456789abcdef0123456789abcdef"}),
            "InvalidParameterException",
            "The referenced task was not found.",
        ),
        (
            "DeleteCluster",
            json!({"cluster": "c"}),
            "ClusterContainsServicesException",
            "The Cluster cannot be deleted while Services are active.",
        ),
    ];
    for (op, body, error, message) in table {
        assert_eq!(s.err(op, body, error).await, message, "{op}");
    }
    // Members Berth cannot honour are refused by name, never dropped.
    let mut gpu = task_def("gpu");
    gpu["containerDefinitions"][0]["resourceRequirements"] = json!([{"type": "GPU", "value": "1"}]);
    let mut tee = task_def("tee");
    tee["trustedExecutionConfiguration"] = json!({"isolationMode": "x"});
    let mut selflink = task_def("selflink");
    let own = selflink["containerDefinitions"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    selflink["containerDefinitions"][0]["links"] = json!([format!("{own}:me")]);
    for (op, body, error, says) in [
        (
            "RegisterTaskDefinition",
            gpu,
            "ClientException",
            "resourceRequirements",
        ),
        (
            "RegisterTaskDefinition",
            tee,
            "ClientException",
            "trustedExecutionConfiguration",
        ),
        (
            "RegisterTaskDefinition",
            selflink,
            "ClientException",
            "links",
        ),
        (
            "CreateService",
            json!({"cluster": "c", "serviceName": "g", "taskDefinition": "web",
                   "gatewayConnectors": [{}]}),
            "InvalidParameterException",
            "gatewayConnectors",
        ),
    ] {
        let m = s.err(op, body, error).await;
        assert!(m.contains(says), "{op}: {m}");
    }
    s.ok("DeleteService", json!({"cluster": "c", "service": "api"}))
        .await;
    assert_eq!(
        s.err(
            "UpdateService",
            json!({"cluster": "c", "service": "api", "desiredCount": 1}),
            "ServiceNotActiveException"
        )
        .await,
        "Service was not ACTIVE."
    );
    s.stop().await;
}

/// Services take tags after they are made; what is missing is named by the ARN it would have;
/// task definitions that a run cannot use are refused in ECS's words.
#[tokio::test]
async fn service_tags_missing_arns_and_run_errors_in_ecs_words() {
    let s = TestServer::start().await;
    s.ok("CreateCluster", json!({"clusterName": "c"})).await;
    s.ok("RegisterTaskDefinition", task_def("web")).await;
    let svc = s
        .ok(
            "CreateService",
            json!({"cluster": "c", "serviceName": "web", "taskDefinition": "web", "desiredCount": 0,
                   "tags": [{"key": "team", "value": "a"}]}),
        )
        .await;
    let arn = svc["service"]["serviceArn"].as_str().unwrap().to_string();
    assert_eq!(
        svc["service"]["tags"],
        json!([{"key": "team", "value": "a"}]),
        "CreateService echoes its tags"
    );
    s.ok(
        "TagResource",
        json!({"resourceArn": arn, "tags": [{"key": "tier", "value": "front"}]}),
    )
    .await;
    s.ok(
        "UntagResource",
        json!({"resourceArn": arn, "tagKeys": ["team"]}),
    )
    .await;
    let listed = s
        .ok("ListTagsForResource", json!({"resourceArn": arn}))
        .await;
    assert_eq!(listed["tags"], json!([{"key": "tier", "value": "front"}]));
    let described = s
        .ok(
            "DescribeServices",
            json!({"cluster": "c", "services": ["web", "ghost"], "include": ["TAGS"]}),
        )
        .await;
    assert_eq!(
        described["services"][0]["tags"],
        json!([{"key": "tier", "value": "front"}])
    );
    assert_eq!(
        described["failures"][0]["arn"], "arn:aws:ecs:us-east-1:000000000000:service/c/ghost",
        "a missing service is named by its ARN: {described}"
    );
    let ghost = arn.replace("/web", "/ghost");
    s.err(
        "TagResource",
        json!({"resourceArn": ghost, "tags": [{"key": "k", "value": "v"}]}),
        "ResourceNotFoundException",
    )
    .await;
    let instances = s
        .ok(
            "DescribeContainerInstances",
            json!({"cluster": "c", "containerInstances": ["0123456789abcdef0123456789abcdef"]}),
        )
        .await;
    assert_eq!(
        instances["failures"][0]["arn"],
        "arn:aws:ecs:us-east-1:000000000000:container-instance/c/0123456789abcdef0123456789abcdef"
    );

    for (op, body, code, message) in [
        (
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "nope"}),
            "ClientException",
            "TaskDefinition not found.",
        ),
        (
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "web:x"}),
            "InvalidParameterException",
            "Invalid revision number. Number: x",
        ),
        (
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "web", "launchType": "FARGATE"}),
            "InvalidParameterException",
            "Task definition does not support launch_type FARGATE.",
        ),
        (
            "DescribeTasks",
            json!({"cluster": "c", "tasks": []}),
            "InvalidParameterException",
            "Tasks cannot be empty.",
        ),
    ] {
        let m = s.err(op, body.clone(), code).await;
        assert!(
            m.starts_with(message),
            "{op} {body}: {m:?} should start with {message:?}"
        );
    }
    s.ok(
        "DeregisterTaskDefinition",
        json!({"taskDefinition": "web:1"}),
    )
    .await;
    let m = s
        .err(
            "RunTask",
            json!({"cluster": "c", "taskDefinition": "web:1"}),
            "ClientException",
        )
        .await;
    assert!(m.starts_with("TaskDefinition is inactive"), "{m}");

    let m = s
        .err(
            "ListTagsForResource",
            json!({"resourceArn": "arn:aws:s3:::bucket"}),
            "InvalidParameterException",
        )
        .await;
    assert!(m.starts_with("The ARN provided is invalid."), "{m}");
    s.ok("CreateCluster", json!({"clusterName": "gone"})).await;
    s.ok("DeleteCluster", json!({"cluster": "gone"})).await;
    let m = s
        .err(
            "TagResource",
            json!({"resourceArn": "arn:aws:ecs:us-east-1:000000000000:cluster/gone", "tags": [{"key": "k", "value": "v"}]}),
            "InvalidParameterException",
        )
        .await;
    assert_eq!(
        m,
        "The specified cluster is inactive. Specify an active cluster and try again."
    );
    s.stop().await;
}
