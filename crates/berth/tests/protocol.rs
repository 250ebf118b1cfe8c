//! Authentication, malformed input and misbehaving connections: AWS's errors, never a panic, a
//! hang, a 500 or a changed store.
#![allow(clippy::unwrap_used)]

mod common;
use berth_control::http::Limits;
use common::{raw_request, task_def, TestServer, TARGET_PREFIX};
use serde_json::json;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn cluster_count(s: &TestServer) -> usize {
    s.ok("ListClusters", json!({})).await["clusterArns"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn authentication_failures_are_403_with_aws_names() {
    let s = TestServer::start().await;
    let body = json!({"clusterName": "x"}).to_string();
    let now = SystemTime::now();
    // Unsigned.
    let unsigned = raw_request(
        &s.endpoint,
        "POST",
        "/",
        &[
            ("content-type".into(), "application/x-amz-json-1.1".into()),
            (
                "x-amz-target".into(),
                format!("{TARGET_PREFIX}CreateCluster"),
            ),
        ],
        body.clone().into_bytes(),
    )
    .await;
    assert_eq!(
        (unsigned.status, unsigned.error_type().as_deref()),
        (403, Some("MissingAuthenticationTokenException"))
    );
    // Unknown key.
    let a = s
        .call_as(
            "CreateCluster",
            &body,
            "AKIAUNKNOWN000000000",
            "secret",
            now,
        )
        .await;
    assert_eq!(
        (a.status, a.error_type().as_deref()),
        (403, Some("UnrecognizedClientException"))
    );
    // Known key, wrong secret.
    let a = s
        .call_as("CreateCluster", &body, &s.access_key, "not-the-secret", now)
        .await;
    assert_eq!(
        (a.status, a.error_type().as_deref()),
        (403, Some("InvalidSignatureException"))
    );
    // Clock skew beyond 15 minutes, both ways.
    for skew in [-1200i64, 1200] {
        let when = if skew < 0 {
            now - Duration::from_secs(1200)
        } else {
            now + Duration::from_secs(1200)
        };
        let a = s
            .call_as("CreateCluster", &body, &s.access_key, &s.secret_key, when)
            .await;
        assert_eq!(
            (a.status, a.error_type().as_deref()),
            (403, Some("InvalidSignatureException")),
            "skew {skew}"
        );
        assert!(
            a.body["message"].as_str().unwrap().starts_with("Signature"),
            "{}",
            a.body
        );
    }
    // Within the window is fine.
    let a = s
        .call_as(
            "ListClusters",
            "{}",
            &s.access_key,
            &s.secret_key,
            now - Duration::from_secs(600),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        cluster_count(&s).await,
        0,
        "no refused request changed the store"
    );
    s.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_aws_errors() {
    let s = TestServer::start().await;
    let ak = s.access_key.clone();
    let sk = s.secret_key.clone();
    let now = SystemTime::now();
    let cases = [
        ("CreateCluster", "{not json", "SerializationException"),
        ("CreateCluster", "[1,2]", "SerializationException"),
        (
            "CreateCluster",
            r#"{"clusterName": 5}"#,
            "SerializationException",
        ),
        (
            "RegisterTaskDefinition",
            r#"{"family":"f","containerDefinitions":[{"name":"a","memory":"lots"}]}"#,
            "SerializationException",
        ),
        (
            "RegisterTaskDefinition",
            r#"{"family":"f","containerDefinitions":{"name":"a"}}"#,
            "SerializationException",
        ),
        ("Frobnicate", "{}", "UnknownOperationException"),
        ("ExecuteCommand", "{}", "UnknownOperationException"),
    ];
    for (op, body, error) in cases {
        let a = s.call_as(op, body, &ak, &sk, now).await;
        assert_eq!(
            (a.status, a.error_type().as_deref()),
            (400, Some(error)),
            "{op} {body}: {}",
            a.body
        );
        assert!(a.request_id.is_some());
    }
    let a = s
        .call_as(
            "RegisterTaskDefinition",
            r#"{"family":"f","containerDefinitions":[{"name":"a","memory":"lots"}]}"#,
            &ak,
            &sk,
            now,
        )
        .await;
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("containerDefinitions[0].memory"),
        "{}",
        a.body
    );
    // Oversized body: refused before it is read.
    let big = format!(r#"{{"clusterName":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let a = s.call_as("CreateCluster", &big, &ak, &sk, now).await;
    assert_eq!(
        (a.status, a.error_type().as_deref()),
        (413, Some("RequestEntityTooLargeException"))
    );
    // Unknown routes.
    let a = raw_request(&s.endpoint, "GET", "/nothing", &[], vec![]).await;
    assert_eq!(a.status, 404);
    let a = raw_request(&s.endpoint, "POST", "/_berth/reset", &[], vec![]).await;
    assert_eq!(a.status, 404, "reset exists only in dev mode");
    let a = raw_request(&s.endpoint, "GET", "/healthz", &[], vec![]).await;
    assert_eq!(a.status, 200);
    assert_eq!(cluster_count(&s).await, 0);
    s.stop().await;
}

#[tokio::test]
async fn slow_and_broken_connections_do_not_hold_the_server() {
    let limits = Limits {
        body_timeout: Duration::from_millis(500),
        header_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let s = TestServer::start_with(false, limits).await;
    // A client that promises a body and never sends it gets a timeout answer.
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\nx-amz-target: AmazonEC2ContainerServiceV20141113.ListClusters\r\n\r\n{").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf))
        .await
        .expect("the server answers a stalled body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("HTTP/1.1 408") && text.contains("RequestTimeoutException"),
        "{text}"
    );
    // A client that stalls in its headers is disconnected.
    let mut stall = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stall.write_all(b"POST / HTTP/1.1\r\nhost:").await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), stall.read(&mut buf))
        .await
        .expect("the server drops a stalled header within 10 s");
    // Closed (EOF or reset), or answered with 408 before closing: never left hanging.
    if let Ok(n) = r {
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            n == 0 || text.starts_with("HTTP/1.1 408"),
            "unexpected answer to a stalled header: {text}"
        );
    }
    // Connections cut mid-request.
    for _ in 0..20 {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\n\r\n{\"cl")
            .await
            .unwrap();
        drop(c);
    }
    // Garbage instead of HTTP.
    let mut g = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    g.write_all(&[0xff; 64]).await.unwrap();
    drop(g);
    // The server still serves.
    s.ok("CreateCluster", json!({"clusterName": "still-here"}))
        .await;
    s.stop().await;
}

#[tokio::test]
async fn dev_mode_accepts_any_wellformed_credentials_and_resets() {
    let s = TestServer::start_with(true, Limits::default()).await;
    let a = s
        .call_as(
            "CreateCluster",
            r#"{"clusterName":"dev"}"#,
            "AKIAANYTHING",
            "whatever",
            SystemTime::now(),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    s.ok("RegisterTaskDefinition", task_def("x")).await;
    // Still signed: an unsigned request is refused even in dev mode.
    let unsigned = raw_request(
        &s.endpoint,
        "POST",
        "/",
        &[(
            "x-amz-target".into(),
            format!("{TARGET_PREFIX}ListClusters"),
        )],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(unsigned.status, 403);
    let r = raw_request(&s.endpoint, "POST", "/_berth/reset", &[], vec![]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(cluster_count(&s).await, 0);
    assert_eq!(
        s.ok("ListTaskDefinitionFamilies", json!({})).await["families"],
        json!([])
    );
    // The keys survive a reset.
    s.ok("ListClusters", json!({})).await;
    s.stop().await;
}
