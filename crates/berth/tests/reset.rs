//! Dev mode's reset wipes every piece of state Berth has: after one, the store holds nothing
//! but the admin key, and the registry's blobs, the logs and the metrics are gone. Served at
//! `/_berth/reset` and at `/moto-api/reset` (the emulators' harness path), in `--dev` only.
#![allow(clippy::unwrap_used)]

mod common;
use berth_control::http::Limits;
use common::{raw_request, signed_ecr_call, signed_logs_call, task_def, Reg, TestServer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Fills every kind of state: ECS records, tags, settings, a join token and an agent key, a
/// registry image with its blobs, a log event, a metric, a load balancer with a listener
/// (listening on the returned port).
async fn fill(s: &TestServer) -> u16 {
    use aws_sdk_elasticloadbalancingv2 as elbv2;
    let elb = common::sdk_client!(elbv2, s);
    let lb = elb.create_load_balancer().name("web").send().await.unwrap();
    let tg = elb
        .create_target_group()
        .name("web")
        .protocol(elbv2::types::ProtocolEnum::Http)
        .port(80)
        .target_type(elbv2::types::TargetTypeEnum::Ip)
        .send()
        .await
        .unwrap();
    let port = common::free_port();
    elb.create_listener()
        .load_balancer_arn(lb.load_balancers()[0].load_balancer_arn().unwrap())
        .protocol(elbv2::types::ProtocolEnum::Http)
        .port(i32::from(port))
        .default_actions(
            elbv2::types::Action::builder()
                .r#type(elbv2::types::ActionTypeEnum::Forward)
                .target_group_arn(tg.target_groups()[0].target_group_arn().unwrap())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the listener listens"
    );
    s.ok(
        "CreateCluster",
        json!({"clusterName": "c1", "tags": [{"key": "a", "value": "b"}]}),
    )
    .await;
    s.ok("RegisterTaskDefinition", task_def("web")).await;
    s.ok(
        "PutAccountSetting",
        json!({"name": "containerInsights", "value": "enabled"}),
    )
    .await;
    let token = s.control.ensure_join_token("c1").await.unwrap();
    let joined = raw_request(
        &s.endpoint,
        "POST",
        berth_agent_proto::JOIN_PATH,
        &[("content-type".into(), "application/json".into())],
        serde_json::to_vec(&json!({"cluster": "c1", "token": token, "host": {
            "instance_id": "i-0123456789abcdef0", "cpu": 1024, "memory_mib": 1024,
            "reserved_ports": [], "attributes": {}, "agent_version": "t", "docker_version": "t"}}))
        .unwrap(),
    )
    .await;
    assert_eq!(joined.status, 200, "{}", joined.body);
    let a = signed_ecr_call(
        &s.endpoint,
        "CreateRepository",
        &json!({"repositoryName": "app"}),
        &s.access_key,
        &s.secret_key,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let reg = Reg::new(s);
    let (config, layer) = (b"{}".to_vec(), b"layer bytes".to_vec());
    for data in [&config, &layer] {
        let d = digest(data);
        let r = reg
            .req(
                "POST",
                &format!("/v2/app/blobs/uploads/?digest={d}"),
                &[],
                data,
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(&layer), "size": layer.len()}],
    })
    .to_string();
    let r = reg
        .req(
            "PUT",
            "/v2/app/manifests/v1",
            &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
            manifest.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 201);
    for (op, body) in [
        ("CreateLogGroup", json!({"logGroupName": "/g"})),
        (
            "CreateLogStream",
            json!({"logGroupName": "/g", "logStreamName": "s"}),
        ),
    ] {
        assert_eq!(signed_logs_call(s, op, &body).await.status, 200);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let put = signed_logs_call(
        s,
        "PutLogEvents",
        &json!({"logGroupName": "/g", "logStreamName": "s",
                "logEvents": [{"timestamp": now, "message": "hello"}]}),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let metrics = s.control.cloudwatch.clone().unwrap();
    metrics
        .put(
            &[berth_cloudwatch::Datum {
                key: berth_cloudwatch::SeriesKey::new("App", "m", vec![]),
                timestamp_ms: now,
                unit: berth_cloudwatch::Unit::Count,
                stats: berth_cloudwatch::Stats::from_value(1.0),
                high_resolution: false,
            }],
            now,
            true,
        )
        .unwrap();
    port
}

/// A second region's state: a cluster and a repository in eu-west-1.
async fn fill_second_region(s: &TestServer) {
    let conf = |b: aws_sdk_ecs::config::Builder| {
        b.behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
            .region(aws_sdk_ecs::config::Region::new("eu-west-1"))
            .endpoint_url(&s.endpoint)
            .credentials_provider(aws_sdk_ecs::config::Credentials::new(
                &s.access_key,
                &s.secret_key,
                None,
                None,
                "test",
            ))
            .build()
    };
    let ecs = aws_sdk_ecs::Client::from_conf(conf(aws_sdk_ecs::Config::builder()));
    ecs.create_cluster()
        .cluster_name("eu")
        .send()
        .await
        .unwrap();
    let ecr = aws_sdk_ecr::Client::from_conf(
        aws_sdk_ecr::Config::builder()
            .behavior_version(aws_sdk_ecr::config::BehaviorVersion::latest())
            .region(aws_sdk_ecr::config::Region::new("eu-west-1"))
            .endpoint_url(&s.endpoint)
            .credentials_provider(aws_sdk_ecr::config::Credentials::new(
                &s.access_key,
                &s.secret_key,
                None,
                None,
                "test",
            ))
            .build(),
    );
    ecr.create_repository()
        .repository_name("app")
        .send()
        .await
        .unwrap();
}

/// Every key in the whole store, every region's included.
async fn keys(s: &TestServer) -> Vec<String> {
    s.control
        .root
        .range("", None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_but_the_admin_key_survives_a_reset_on_either_path() {
    let s = TestServer::start_with(true, Limits::default()).await;
    let mut admin = vec![
        "auth/admin".to_string(),
        format!("auth/keys/{}", s.access_key),
    ];
    // On a store several servers can share (etcd), the key of the server that leads.
    if common::on_etcd() {
        admin.push("leader".to_string());
    }
    admin.sort();
    for path in ["/_berth/reset", "/moto-api/reset"] {
        let port = fill(&s).await;
        fill_second_region(&s).await;
        let before = keys(&s).await;
        for prefix in [
            "regions/us-east-1/clusters/",
            "regions/us-east-1/taskdefs/",
            "regions/us-east-1/tags/",
            "regions/us-east-1/settings/",
            "regions/us-east-1/ecr/",
            "regions/us-east-1/auth/join-token/",
            "regions/us-east-1/instances/",
            "regions/us-east-1/elb/",
            "regions/eu-west-1/clusters/",
            "regions/eu-west-1/ecr/",
        ] {
            assert!(
                before.iter().any(|k| k.starts_with(prefix)),
                "the fill made {prefix}…: {before:?}"
            );
        }
        let r = raw_request(&s.endpoint, "POST", path, &[], vec![]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let mut after = keys(&s).await;
        after.sort();
        assert_eq!(after, admin, "after {path}, only the admin key is left");
        let registry = s.control.registry.clone().unwrap();
        assert!(
            registry.blobs.list().await.unwrap().is_empty(),
            "no blob survives {path}"
        );
        let groups = signed_logs_call(&s, "DescribeLogGroups", &json!({})).await;
        assert_eq!(
            groups.body["logGroups"],
            json!([]),
            "no log group survives {path}"
        );
        let metrics = s.control.cloudwatch.clone().unwrap();
        assert_eq!(metrics.series_count(), 0, "no metric survives {path}");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "no listener survives {path}"
        );
        // The admin goes on, and a repository of the same name can be made again.
        let a = signed_ecr_call(
            &s.endpoint,
            "CreateRepository",
            &json!({"repositoryName": "app"}),
            &s.access_key,
            &s.secret_key,
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
        let a = raw_request(&s.endpoint, "POST", path, &[], vec![]).await;
        assert_eq!(a.status, 200);
        let listed: Value = s.ok("ListClusters", json!({})).await;
        assert_eq!(listed["clusterArns"], json!([]));
    }
    s.stop().await;

    // Without --dev neither path exists.
    let s = TestServer::start().await;
    for path in ["/_berth/reset", "/moto-api/reset"] {
        let r = raw_request(&s.endpoint, "POST", path, &[], vec![]).await;
        assert_eq!(r.status, 404, "{path} outside dev mode");
    }
    s.stop().await;
}
