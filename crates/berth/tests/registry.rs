//! The image registry end to end: the distribution protocol over raw HTTP (every bad input a
//! precise error and nothing stored), ECR's API through the real AWS CLI, and the real `docker`
//! CLI pushing, pulling and running, plus a task whose image comes from the registry.

#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use common::{
    aws_cli, docker_available, wait_joined, wait_task, Answer, Reg, TestAgent, TestServer, BUSYBOX,
};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::process::Command;
use std::time::{Duration, SystemTime};

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

async fn ecr(s: &TestServer, op: &str, body: Value) -> Answer {
    common::signed_ecr_call(&s.endpoint, op, &body, &s.access_key, &s.secret_key).await
}

impl Reg {
    /// Uploads a blob monolithically; returns its digest.
    async fn blob(&self, repo: &str, data: &[u8]) -> String {
        let d = digest(data);
        let r = self
            .req(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                &[],
                data,
            )
            .await;
        assert_eq!(r.status, 201, "upload of {d}: {:?}", r.json());
        d
    }
}

fn image_manifest(config: (&str, usize), layers: &[(&str, usize)]) -> Vec<u8> {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(d, n)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n})).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_protocol_round_trips_and_refuses_bad_input_precisely() {
    let s = TestServer::start().await;
    let reg = Reg::new(&s);
    let anon = Reg {
        base: reg.base.clone(),
        auth: None,
    };

    // Authentication: a challenge, the token flow, wrong secrets.
    let r = anon.req("GET", "/v2/", &[], b"").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "UNAUTHORIZED");
    let challenge = r.header("www-authenticate");
    assert!(
        challenge.contains(&format!("realm=\"http://{}/v2/token\"", s.registry_addr)),
        "{challenge}"
    );
    let t = reg
        .req("GET", "/v2/token?service=berth-registry", &[], b"")
        .await;
    assert_eq!(t.status, 200);
    let token = t.json()["token"].as_str().unwrap().to_string();
    let bearer = Reg {
        base: reg.base.clone(),
        auth: Some(format!("Bearer {token}")),
    };
    assert_eq!(bearer.req("GET", "/v2/", &[], b"").await.status, 200);
    let wrong = Reg {
        base: reg.base.clone(),
        auth: Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:nope", s.access_key))
        )),
    };
    assert_eq!(wrong.req("GET", "/v2/", &[], b"").await.status, 401);
    let forged = Reg {
        base: reg.base.clone(),
        auth: Some(format!("Bearer {}x", token)),
    };
    assert_eq!(forged.req("GET", "/v2/", &[], b"").await.status, 401);

    // Anonymous pulls only when the operator allows them; never anonymous pushes.
    let registry = s.control.registry.clone().unwrap();
    assert!(registry.authenticate(None).await.is_err());
    let mut open = registry.clone();
    let mut cfg = (*open.config).clone();
    cfg.anonymous_pull = true;
    open.config = std::sync::Arc::new(cfg);
    let access = open.authenticate(None).await.unwrap();
    assert!(!access.can_write(), "anonymous access is pull-only");

    // Repositories must exist, and have valid names.
    let r = reg.req("POST", "/v2/nope/blobs/uploads/", &[], b"").await;
    assert_eq!((r.status, r.code().as_str()), (404, "NAME_UNKNOWN"));
    let r = reg
        .req("POST", "/v2/Bad_Name/blobs/uploads/", &[], b"")
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "NAME_INVALID"));
    for (name, mutability) in [
        ("app", "MUTABLE"),
        ("team/other", "MUTABLE"),
        ("imm", "IMMUTABLE"),
    ] {
        let a = ecr(
            &s,
            "CreateRepository",
            json!({"repositoryName": name, "imageTagMutability": mutability}),
        )
        .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
    }

    // A wrong digest stores nothing.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let d = digest(&data);
    let other = digest(b"something else");
    let r = reg
        .req(
            "POST",
            &format!("/v2/app/blobs/uploads/?digest={other}"),
            &[],
            &data,
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "DIGEST_INVALID"),
        "{:?}",
        r.json()
    );
    for dd in [&d, &other] {
        assert_eq!(
            reg.req("HEAD", &format!("/v2/app/blobs/{dd}"), &[], b"")
                .await
                .status,
            404
        );
    }

    // Chunked and resumable: out-of-order chunks are refused, the status says where to go on.
    let r = reg.req("POST", "/v2/app/blobs/uploads/", &[], b"").await;
    assert_eq!(r.status, 202);
    let loc = r.header("location");
    assert!(loc.starts_with("/v2/app/blobs/uploads/"), "{loc}");
    let r = reg
        .req(
            "PATCH",
            &loc,
            &[("content-range", "0-99999")],
            &data[..100_000],
        )
        .await;
    assert_eq!((r.status, r.header("range").as_str()), (202, "0-99999"));
    let r = reg
        .req("PATCH", &loc, &[("content-range", "5-10")], &data[5..11])
        .await;
    assert_eq!(r.status, 416, "an out-of-order chunk: {:?}", r.json());
    let r = reg.req("GET", &loc, &[], b"").await;
    assert_eq!((r.status, r.header("range").as_str()), (204, "0-99999"));
    let r = reg
        .req(
            "PUT",
            &format!("{loc}?digest={d}"),
            &[("content-range", "100000-199999")],
            &data[100_000..],
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(r.header("docker-content-digest"), d);
    let r = reg
        .req(
            "GET",
            &format!("/v2/app/blobs/{d}"),
            &[("range", "bytes=70000-130009")],
            b"",
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), "bytes 70000-130009/200000");
    assert_eq!(&r.body[..], &data[70_000..130_010]);
    let r = reg
        .req("GET", &format!("/v2/app/blobs/{d}"), &[], b"")
        .await;
    assert_eq!(&r.body[..], &data[..]);
    let r = reg
        .req("HEAD", &format!("/v2/app/blobs/{d}"), &[], b"")
        .await;
    assert_eq!(
        (r.status, r.header("content-length").as_str()),
        (200, "200000")
    );

    // A truncated upload: the client announces 1000 bytes, sends 10 and hangs up.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let full = vec![7u8; 1000];
        let dd = digest(&full);
        let mut tcp = tokio::net::TcpStream::connect(s.registry_addr)
            .await
            .unwrap();
        let head = format!(
            "POST /v2/app/blobs/uploads/?digest={dd} HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\ncontent-length: 1000\r\n\r\n",
            reg.auth.as_ref().unwrap()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&full[..10]).await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink)).await;
        let mut gone = false;
        for _ in 0..50 {
            let uploads = s
                .control
                .store
                .range("ecr/uploads/", None, None)
                .await
                .unwrap();
            if uploads.is_empty() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "the truncated upload was not discarded");
        assert_eq!(
            reg.req("HEAD", &format!("/v2/app/blobs/{dd}"), &[], b"")
                .await
                .status,
            404
        );
    }

    // Manifests: invalid JSON, missing blobs, bad tags; nothing is stored for any of them.
    let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
    let cfg_d = reg.blob("app", cfg).await;
    let r = reg
        .req(
            "PUT",
            "/v2/app/manifests/v1",
            &[("content-type", OCI)],
            b"{not json",
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "MANIFEST_INVALID"));
    let missing = digest(b"never uploaded");
    let m = image_manifest((&cfg_d, cfg.len()), &[(&missing, 14)]);
    let r = reg
        .req("PUT", "/v2/app/manifests/v1", &[("content-type", OCI)], &m)
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN"),
        "{:?}",
        r.json()
    );
    let m = image_manifest((&cfg_d, cfg.len()), &[(&d, data.len())]);
    let r = reg
        .req(
            "PUT",
            "/v2/app/manifests/-bad",
            &[("content-type", OCI)],
            &m,
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "TAG_INVALID"));
    let r = reg
        .req(
            "PUT",
            &format!("/v2/app/manifests/{}", digest(b"x")),
            &[("content-type", OCI)],
            &m,
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"));
    let tags = reg.req("GET", "/v2/app/tags/list", &[], b"").await.json();
    assert_eq!(
        tags["tags"],
        json!([]),
        "nothing stored by refused manifests"
    );

    // A good manifest, by tag and by digest.
    let r = reg
        .req("PUT", "/v2/app/manifests/v1", &[("content-type", OCI)], &m)
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let md = digest(&m);
    assert_eq!(r.header("docker-content-digest"), md);
    for reference in ["v1", md.as_str()] {
        let r = reg
            .req("GET", &format!("/v2/app/manifests/{reference}"), &[], b"")
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], &m[..], "the manifest comes back byte for byte");
        assert_eq!(r.header("content-type"), OCI);
    }

    // An index over it; an index over a manifest the repository lacks is refused.
    let index = |d: &str| {
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
               "manifests": [{"mediaType": OCI, "digest": d, "size": m.len(),
                              "platform": {"architecture": "amd64", "os": "linux"}}]})
        .to_string()
        .into_bytes()
    };
    let idx_ct = [("content-type", "application/vnd.oci.image.index.v1+json")];
    let r = reg
        .req("PUT", "/v2/app/manifests/multi", &idx_ct, &index(&md))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let r = reg
        .req(
            "PUT",
            "/v2/app/manifests/broken",
            &idx_ct,
            &index(&digest(b"nothing")),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );
    let r = reg.req("GET", "/v2/app/manifests/multi", &[], b"").await;
    assert_eq!(
        r.header("content-type"),
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        reg.req("DELETE", "/v2/app/manifests/multi", &[], b"")
            .await
            .status,
        202
    );

    // IMMUTABLE: the tag cannot move, and the first manifest stays.
    let cfg2 = br#"{"architecture":"arm64","os":"linux"}"#;
    let c1 = reg.blob("imm", cfg).await;
    let c2 = reg.blob("imm", cfg2).await;
    let m1 = image_manifest((&c1, cfg.len()), &[]);
    let m2 = image_manifest((&c2, cfg2.len()), &[]);
    assert_eq!(
        reg.req(
            "PUT",
            "/v2/imm/manifests/1.0",
            &[("content-type", OCI)],
            &m1
        )
        .await
        .status,
        201
    );
    let r = reg
        .req(
            "PUT",
            "/v2/imm/manifests/1.0",
            &[("content-type", OCI)],
            &m2,
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "TAG_INVALID"));
    assert!(r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("immutable"));
    let r = reg.req("HEAD", "/v2/imm/manifests/1.0", &[], b"").await;
    assert_eq!(r.header("docker-content-digest"), digest(&m1));

    // Cross-repository mount, then catalog and tags with pagination.
    let r = reg
        .req(
            "POST",
            &format!("/v2/team/other/blobs/uploads/?mount={d}&from=app"),
            &[],
            b"",
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(
        reg.req("HEAD", &format!("/v2/team/other/blobs/{d}"), &[], b"")
            .await
            .status,
        200
    );
    let r = reg.req("GET", "/v2/_catalog?n=2", &[], b"").await;
    assert_eq!(r.json()["repositories"], json!(["app", "imm"]));
    assert!(
        r.header("link").contains("last=imm"),
        "{}",
        r.header("link")
    );
    let r = reg.req("GET", "/v2/_catalog?n=2&last=imm", &[], b"").await;
    assert_eq!(r.json()["repositories"], json!(["team/other"]));
    assert_eq!(
        reg.req("PUT", "/v2/app/manifests/v2", &[("content-type", OCI)], &m)
            .await
            .status,
        201
    );
    let r = reg.req("GET", "/v2/app/tags/list?n=1", &[], b"").await;
    assert_eq!(r.json()["tags"], json!(["v1"]));
    assert!(r.header("link").contains("last=v1"));

    // Referrers: a signature-like artifact whose subject is v1.
    let empty = reg.blob("app", b"{}").await;
    let art = json!({
        "schemaVersion": 2, "mediaType": OCI, "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [], "subject": {"mediaType": OCI, "digest": md, "size": m.len()},
    })
    .to_string()
    .into_bytes();
    let r = reg
        .req(
            "PUT",
            &format!("/v2/app/manifests/{}", digest(&art)),
            &[("content-type", OCI)],
            &art,
        )
        .await;
    assert_eq!((r.status, r.header("oci-subject")), (201, md.clone()));
    let r = reg
        .req("GET", &format!("/v2/app/referrers/{md}"), &[], b"")
        .await;
    let list = r.json();
    assert_eq!(list["manifests"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(
        list["manifests"][0]["artifactType"],
        "application/vnd.example.sig"
    );
    let r = reg
        .req(
            "GET",
            &format!("/v2/app/referrers/{md}?artifactType=other"),
            &[],
            b"",
        )
        .await;
    assert_eq!(r.json()["manifests"], json!([]));
    assert_eq!(r.header("oci-filters-applied"), "artifactType");

    // Deletes: a tag, then the manifest by digest.
    assert_eq!(
        reg.req("DELETE", "/v2/app/manifests/v2", &[], b"")
            .await
            .status,
        202
    );
    assert_eq!(
        reg.req("GET", "/v2/app/manifests/v2", &[], b"")
            .await
            .code(),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(
        reg.req("DELETE", &format!("/v2/app/manifests/{md}"), &[], b"")
            .await
            .status,
        202
    );
    let r = reg.req("GET", "/v2/app/manifests/v1", &[], b"").await;
    assert_eq!((r.status, r.code().as_str()), (404, "MANIFEST_UNKNOWN"));
    assert_eq!(
        reg.req("DELETE", &format!("/v2/team/other/blobs/{d}"), &[], b"")
            .await
            .status,
        202
    );
    assert_eq!(
        reg.req("HEAD", &format!("/v2/team/other/blobs/{d}"), &[], b"")
            .await
            .status,
        404
    );

    // Garbage collection: with no grace, the blobs nothing references go; referenced ones stay.
    let mut registry = s.control.registry.clone().unwrap();
    let mut cfg = (*registry.config).clone();
    cfg.gc_grace = Duration::ZERO;
    registry.config = std::sync::Arc::new(cfg);
    let collected = registry.collect_garbage().await.unwrap();
    assert!(collected.blobs >= 1, "{collected:?}");
    let r = reg.req("HEAD", "/v2/imm/manifests/1.0", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        reg.req("GET", &format!("/v2/imm/blobs/{c1}"), &[], b"")
            .await
            .status,
        200
    );
    assert_eq!(
        reg.req("GET", &format!("/v2/app/blobs/{d}"), &[], b"")
            .await
            .status,
        404
    );
}

/// Runs `aws ecr ARGS` against the server: Ok(json) or Err(stderr).
fn aws_ecr(bin: &str, s: &TestServer, args: &[&str]) -> Result<Value, String> {
    common::aws_json(bin, s, &s.secret_key, "ecr", args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_api_through_the_aws_cli_with_lifecycle_policies_enforced() {
    let Some(bin) = aws_cli() else { return };
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| tokio::task::block_in_place(|| aws_ecr(&bin, &s, args));

    let repo = run(&[
        "create-repository",
        "--repository-name",
        "shop/web",
        "--tags",
        "Key=team,Value=web",
    ])
    .unwrap();
    assert_eq!(
        repo["repository"]["repositoryUri"],
        format!("{}/shop/web", s.registry_addr)
    );
    let e = run(&["create-repository", "--repository-name", "shop/web"]).unwrap_err();
    assert!(e.contains("RepositoryAlreadyExistsException"), "{e}");
    let e = run(&["create-repository", "--repository-name", "Shop..Web"]).unwrap_err();
    assert!(
        e.contains("InvalidParameterException") && e.contains("Shop..Web"),
        "{e}"
    );
    let e = run(&["describe-repositories", "--repository-names", "nope"]).unwrap_err();
    assert!(e.contains("RepositoryNotFoundException"), "{e}");
    let all = run(&["describe-repositories"]).unwrap();
    assert_eq!(all["repositories"].as_array().unwrap().len(), 1);
    let arn = repo["repository"]["repositoryArn"]
        .as_str()
        .unwrap()
        .to_string();
    let tags = run(&["list-tags-for-resource", "--resource-arn", &arn]).unwrap();
    assert_eq!(tags["tags"], json!([{"Key": "team", "Value": "web"}]));

    // A layer through ECR's own upload API, in two parts.
    let layer: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let ld = digest(&layer);
    let up = run(&["initiate-layer-upload", "--repository-name", "shop/web"]).unwrap();
    let id = up["uploadId"].as_str().unwrap().to_string();
    let part = |n: usize, from: usize, to: usize| {
        let p = dir.path().join(format!("part{n}"));
        std::fs::write(&p, &layer[from..to]).unwrap();
        format!("fileb://{}", p.display())
    };
    let p1 = part(1, 0, 100_000);
    let r = run(&[
        "upload-layer-part",
        "--repository-name",
        "shop/web",
        "--upload-id",
        &id,
        "--part-first-byte",
        "0",
        "--part-last-byte",
        "99999",
        "--layer-part-blob",
        &p1,
    ])
    .unwrap();
    assert_eq!(r["lastByteReceived"], 99_999);
    let e = run(&[
        "upload-layer-part",
        "--repository-name",
        "shop/web",
        "--upload-id",
        &id,
        "--part-first-byte",
        "0",
        "--part-last-byte",
        "99999",
        "--layer-part-blob",
        &p1,
    ])
    .unwrap_err();
    assert!(e.contains("InvalidLayerPartException"), "{e}");
    let p2 = part(2, 100_000, 300_000);
    run(&[
        "upload-layer-part",
        "--repository-name",
        "shop/web",
        "--upload-id",
        &id,
        "--part-first-byte",
        "100000",
        "--part-last-byte",
        "299999",
        "--layer-part-blob",
        &p2,
    ])
    .unwrap();
    let done = run(&[
        "complete-layer-upload",
        "--repository-name",
        "shop/web",
        "--upload-id",
        &id,
        "--layer-digests",
        &ld,
    ])
    .unwrap();
    assert_eq!(done["layerDigest"], ld);
    let avail = run(&[
        "batch-check-layer-availability",
        "--repository-name",
        "shop/web",
        "--layer-digests",
        &ld,
        &digest(b"no"),
    ])
    .unwrap();
    assert_eq!(avail["layers"][0]["layerAvailability"], "AVAILABLE");
    assert_eq!(avail["layers"][0]["layerSize"], 300_000);
    assert_eq!(avail["failures"][0]["failureCode"], "MissingLayerDigest");

    // The download URL works by itself.
    let url = run(&[
        "get-download-url-for-layer",
        "--repository-name",
        "shop/web",
        "--layer-digest",
        &ld,
    ])
    .unwrap();
    let anon = Reg {
        base: String::new(),
        auth: None,
    };
    let r = anon
        .req("GET", url["downloadUrl"].as_str().unwrap(), &[], b"")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], &layer[..]);

    // Images: three tagged pushes by PutImage (one config blob each), then a lifecycle policy
    // that keeps the newest two "v" images.
    let mut digests = Vec::new();
    for i in 0..3 {
        let cfg = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":{i}}}");
        let path = dir.path().join(format!("cfg{i}"));
        std::fs::write(&path, &cfg).unwrap();
        let up = run(&["initiate-layer-upload", "--repository-name", "shop/web"]).unwrap();
        let uid = up["uploadId"].as_str().unwrap().to_string();
        let last = (cfg.len() - 1).to_string();
        run(&[
            "upload-layer-part",
            "--repository-name",
            "shop/web",
            "--upload-id",
            &uid,
            "--part-first-byte",
            "0",
            "--part-last-byte",
            &last,
            "--layer-part-blob",
            &format!("fileb://{}", path.display()),
        ])
        .unwrap();
        let cd = digest(cfg.as_bytes());
        run(&[
            "complete-layer-upload",
            "--repository-name",
            "shop/web",
            "--upload-id",
            &uid,
            "--layer-digests",
            &cd,
        ])
        .unwrap();
        let m = String::from_utf8(image_manifest((&cd, cfg.len()), &[(&ld, layer.len())])).unwrap();
        let tag = format!("v{i}");
        let put = run(&[
            "put-image",
            "--repository-name",
            "shop/web",
            "--image-tag",
            &tag,
            "--image-manifest",
            &m,
        ])
        .unwrap();
        assert_eq!(put["image"]["imageId"]["imageDigest"], digest(m.as_bytes()));
        digests.push(digest(m.as_bytes()));
        if i == 0 {
            let e = run(&[
                "put-image",
                "--repository-name",
                "shop/web",
                "--image-tag",
                &tag,
                "--image-manifest",
                &m,
            ])
            .unwrap_err();
            assert!(e.contains("ImageAlreadyExistsException"), "{e}");
            let bad = m.replace(&ld, &digest(b"missing"));
            let e = run(&[
                "put-image",
                "--repository-name",
                "shop/web",
                "--image-tag",
                "broken",
                "--image-manifest",
                &bad,
            ])
            .unwrap_err();
            assert!(e.contains("LayersNotFoundException"), "{e}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = run(&[
        "describe-images",
        "--repository-name",
        "shop/web",
        "--image-ids",
        "imageTag=v1",
    ])
    .unwrap();
    let detail = &d["imageDetails"][0];
    assert_eq!(detail["imageDigest"], digests[1]);
    assert_eq!(detail["imageManifestMediaType"], OCI);
    assert!(detail["imageSizeInBytes"].as_i64().unwrap() > 300_000);
    let e = run(&[
        "describe-images",
        "--repository-name",
        "shop/web",
        "--image-ids",
        "imageTag=nope",
    ])
    .unwrap_err();
    assert!(e.contains("ImageNotFoundException"), "{e}");
    let got = run(&[
        "batch-get-image",
        "--repository-name",
        "shop/web",
        "--image-ids",
        "imageTag=v2",
        "imageTag=zzz",
    ])
    .unwrap();
    assert_eq!(got["images"][0]["imageId"]["imageDigest"], digests[2]);
    assert_eq!(got["failures"][0]["failureCode"], "ImageNotFound");

    let policy = json!({"rules": [{"rulePriority": 1, "description": "keep two",
        "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"], "countType": "imageCountMoreThan", "countNumber": 2},
        "action": {"type": "expire"}}]})
    .to_string();
    let e = run(&["put-lifecycle-policy", "--repository-name", "shop/web", "--lifecycle-policy-text", "{\"rules\":[{\"rulePriority\":1,\"selection\":{\"tagStatus\":\"tagged\",\"countType\":\"imageCountMoreThan\",\"countNumber\":1},\"action\":{\"type\":\"expire\"}}]}"]).unwrap_err();
    assert!(
        e.contains("InvalidParameterException") && e.contains("tagPrefixList"),
        "{e}"
    );
    // A preview says what the policy would expire, and expires nothing.
    let e = run(&[
        "get-lifecycle-policy-preview",
        "--repository-name",
        "shop/web",
    ])
    .unwrap_err();
    assert!(e.contains("LifecyclePolicyPreviewNotFoundException"), "{e}");
    let e = run(&[
        "start-lifecycle-policy-preview",
        "--repository-name",
        "shop/web",
    ])
    .unwrap_err();
    assert!(
        e.contains("LifecyclePolicyNotFoundException"),
        "no text, no policy: {e}"
    );
    let started = run(&[
        "start-lifecycle-policy-preview",
        "--repository-name",
        "shop/web",
        "--lifecycle-policy-text",
        &policy,
    ])
    .unwrap();
    assert_eq!(started["status"], "COMPLETE", "{started}");
    run(&[
        "wait",
        "lifecycle-policy-preview-complete",
        "--repository-name",
        "shop/web",
    ])
    .unwrap();
    let preview = run(&[
        "get-lifecycle-policy-preview",
        "--repository-name",
        "shop/web",
    ])
    .unwrap();
    assert_eq!(preview["lifecyclePolicyText"], policy);
    assert_eq!(
        preview["summary"]["expiringImageTotalCount"], 1,
        "{preview}"
    );
    let result = &preview["previewResults"][0];
    assert_eq!(
        result["imageDigest"], digests[0],
        "the oldest 'v' image: {preview}"
    );
    assert_eq!(result["imageTags"], json!(["v0"]));
    assert_eq!(result["appliedRulePriority"], 1);
    assert_eq!(result["action"]["type"], "EXPIRE");
    let untagged = run(&[
        "get-lifecycle-policy-preview",
        "--repository-name",
        "shop/web",
        "--filter",
        "tagStatus=UNTAGGED",
    ])
    .unwrap();
    assert_eq!(untagged["previewResults"], json!([]), "{untagged}");
    let listed = run(&["list-images", "--repository-name", "shop/web"]).unwrap();
    assert_eq!(
        listed["imageIds"].as_array().unwrap().len(),
        3,
        "a preview expires nothing"
    );

    // The registry's own settings: its policy, its scanning configuration, no replication, and
    // no scan of any image (Berth has no scanner).
    let e = run(&["get-registry-policy"]).unwrap_err();
    assert!(e.contains("RegistryPolicyNotFoundException"), "{e}");
    let e = run(&["put-registry-policy", "--policy-text", "{\"Version\": 1}"]).unwrap_err();
    assert!(
        e.contains("InvalidParameterException") && e.contains("Statement"),
        "{e}"
    );
    let registry_policy = r#"{"Version":"2012-10-17","Statement":[{"Sid":"rep","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":["ecr:ReplicateImage"],"Resource":"*"}]}"#;
    let put = run(&["put-registry-policy", "--policy-text", registry_policy]).unwrap();
    assert_eq!(put["policyText"], registry_policy);
    let got = run(&["get-registry-policy"]).unwrap();
    assert_eq!(got["policyText"], registry_policy);
    assert_eq!(got["registryId"], "000000000000");
    let gone = run(&["delete-registry-policy"]).unwrap();
    assert_eq!(gone["policyText"], registry_policy);
    assert!(run(&["get-registry-policy"])
        .unwrap_err()
        .contains("RegistryPolicyNotFoundException"));
    let registry = run(&["describe-registry"]).unwrap();
    assert_eq!(
        registry["replicationConfiguration"]["rules"],
        json!([]),
        "{registry}"
    );
    let scanning = run(&["get-registry-scanning-configuration"]).unwrap();
    assert_eq!(
        scanning["scanningConfiguration"]["scanType"], "BASIC",
        "{scanning}"
    );
    let rules = r#"[{"scanFrequency":"SCAN_ON_PUSH","repositoryFilters":[{"filter":"shop/*","filterType":"WILDCARD"}]}]"#;
    run(&[
        "put-registry-scanning-configuration",
        "--scan-type",
        "BASIC",
        "--rules",
        rules,
    ])
    .unwrap();
    let scanning = run(&["get-registry-scanning-configuration"]).unwrap();
    assert_eq!(
        scanning["scanningConfiguration"]["rules"][0]["repositoryFilters"][0]["filter"], "shop/*",
        "{scanning}"
    );
    let e = run(&[
        "put-registry-scanning-configuration",
        "--scan-type",
        "ENHANCED",
    ])
    .unwrap_err();
    assert!(
        e.contains("InvalidParameterException") && e.contains("Inspector"),
        "{e}"
    );
    let e = run(&[
        "put-registry-scanning-configuration",
        "--scan-type",
        "SOMETIMES",
    ])
    .unwrap_err();
    assert!(e.contains("SOMETIMES"), "{e}");
    let e = run(&[
        "describe-image-scan-findings",
        "--repository-name",
        "shop/web",
        "--image-id",
        "imageTag=v1",
    ])
    .unwrap_err();
    assert!(e.contains("ScanNotFoundException"), "{e}");
    let e = run(&[
        "describe-image-scan-findings",
        "--repository-name",
        "shop/web",
        "--image-id",
        "imageTag=nope",
    ])
    .unwrap_err();
    assert!(e.contains("ImageNotFoundException"), "{e}");

    // A repository's own scanning setting, and what the registry's rules make of it.
    run(&[
        "put-image-scanning-configuration",
        "--repository-name",
        "shop/web",
        "--image-scanning-configuration",
        "scanOnPush=false",
    ])
    .unwrap();
    let batch = run(&[
        "batch-get-repository-scanning-configuration",
        "--repository-names",
        "shop/web",
        "nope",
    ])
    .unwrap();
    let cfg = &batch["scanningConfigurations"][0];
    assert_eq!(
        cfg["scanFrequency"], "SCAN_ON_PUSH",
        "the registry's rule for shop/*: {batch}"
    );
    assert_eq!(cfg["scanOnPush"], true, "{batch}");
    assert_eq!(cfg["appliedScanFilters"][0]["filter"], "shop/*", "{batch}");
    assert_eq!(
        batch["failures"][0]["failureCode"], "REPOSITORY_NOT_FOUND",
        "{batch}"
    );

    // Pull-through cache rules: kept and validated; the upstream is out of reach.
    let secret =
        "arn:aws:secretsmanager:us-east-1:000000000000:secret:ecr-pullthroughcache/hub-AbCdEf";
    let e = run(&[
        "create-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "hub",
        "--upstream-registry-url",
        "registry-1.docker.io",
    ])
    .unwrap_err();
    assert!(
        e.contains("InvalidParameterException") && e.contains("credentialArn"),
        "{e}"
    );
    let e = run(&[
        "create-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "mine",
        "--upstream-registry-url",
        "example.com",
    ])
    .unwrap_err();
    assert!(e.contains("UnsupportedUpstreamRegistryException"), "{e}");
    let e = run(&[
        "create-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "Bad!",
        "--upstream-registry-url",
        "quay.io",
    ])
    .unwrap_err();
    assert!(e.contains("ecrRepositoryPrefix"), "{e}");
    let hub = run(&[
        "create-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "hub",
        "--upstream-registry-url",
        "registry-1.docker.io",
        "--credential-arn",
        secret,
    ])
    .unwrap();
    assert_eq!(hub["upstreamRegistry"], "docker-hub", "{hub}");
    run(&[
        "create-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "quay",
        "--upstream-registry-url",
        "quay.io",
    ])
    .unwrap();
    let e = run(&[
        "create-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "quay",
        "--upstream-registry-url",
        "quay.io",
    ])
    .unwrap_err();
    assert!(
        e.contains("PullThroughCacheRuleAlreadyExistsException"),
        "{e}"
    );
    let rules = run(&["describe-pull-through-cache-rules"]).unwrap();
    assert_eq!(
        rules["pullThroughCacheRules"].as_array().unwrap().len(),
        2,
        "{rules}"
    );
    let e = run(&[
        "describe-pull-through-cache-rules",
        "--ecr-repository-prefixes",
        "ghcr",
    ])
    .unwrap_err();
    assert!(e.contains("PullThroughCacheRuleNotFoundException"), "{e}");
    let updated = run(&[
        "update-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "hub",
        "--credential-arn",
        &format!("{secret}2"),
    ])
    .unwrap();
    assert!(
        updated["updatedAt"].is_number() || updated["updatedAt"].is_string(),
        "{updated}"
    );
    let valid = run(&[
        "validate-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "quay",
    ])
    .unwrap();
    assert_eq!(valid["isValid"], false, "{valid}");
    assert!(
        valid["failure"].as_str().unwrap().contains("quay.io"),
        "{valid}"
    );
    let pulled = Reg::new(&s)
        .req("GET", "/v2/quay/coreos/etcd/manifests/v3.5", &[], b"")
        .await;
    assert_eq!(
        (pulled.status, pulled.code().as_str()),
        (404, "NAME_UNKNOWN")
    );
    let said = String::from_utf8_lossy(&pulled.body).to_string();
    assert!(
        said.contains("quay.io") && said.contains("cannot reach"),
        "{said}"
    );
    let plain = Reg::new(&s)
        .req("GET", "/v2/elsewhere/etcd/manifests/v3.5", &[], b"")
        .await;
    let said = String::from_utf8_lossy(&plain.body).to_string();
    assert!(
        !said.contains("cannot reach"),
        "no rule, plain not found: {said}"
    );
    let gone = run(&[
        "delete-pull-through-cache-rule",
        "--ecr-repository-prefix",
        "quay",
    ])
    .unwrap();
    assert_eq!(gone["upstreamRegistryUrl"], "quay.io", "{gone}");

    run(&[
        "put-lifecycle-policy",
        "--repository-name",
        "shop/web",
        "--lifecycle-policy-text",
        &policy,
    ])
    .unwrap();
    let listed = run(&["list-images", "--repository-name", "shop/web"]).unwrap();
    let mut left: Vec<String> = listed["imageIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["imageTag"].as_str().unwrap().to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["v1", "v2"], "the oldest 'v' image expired at once");
    let got = run(&["get-lifecycle-policy", "--repository-name", "shop/web"]).unwrap();
    assert_eq!(got["lifecyclePolicyText"], policy);
    run(&["delete-lifecycle-policy", "--repository-name", "shop/web"]).unwrap();
    let e = run(&["get-lifecycle-policy", "--repository-name", "shop/web"]).unwrap_err();
    assert!(e.contains("LifecyclePolicyNotFoundException"), "{e}");

    // Tag immutability and repository policies.
    run(&[
        "put-image-tag-mutability",
        "--repository-name",
        "shop/web",
        "--image-tag-mutability",
        "IMMUTABLE",
    ])
    .unwrap();
    let m0 = got_manifest(
        &run(&[
            "batch-get-image",
            "--repository-name",
            "shop/web",
            "--image-ids",
            "imageTag=v2",
        ])
        .unwrap(),
    );
    let e = run(&[
        "put-image",
        "--repository-name",
        "shop/web",
        "--image-tag",
        "v1",
        "--image-manifest",
        &m0,
    ])
    .unwrap_err();
    assert!(e.contains("ImageTagAlreadyExistsException"), "{e}");
    let e = run(&["get-repository-policy", "--repository-name", "shop/web"]).unwrap_err();
    assert!(e.contains("RepositoryPolicyNotFoundException"), "{e}");
    let pol = r#"{"Version":"2012-10-17","Statement":[{"Sid":"pull","Effect":"Allow","Principal":"*","Action":["ecr:BatchGetImage"]}]}"#;
    run(&[
        "set-repository-policy",
        "--repository-name",
        "shop/web",
        "--policy-text",
        pol,
    ])
    .unwrap();
    assert_eq!(
        run(&["get-repository-policy", "--repository-name", "shop/web"]).unwrap()["policyText"],
        pol
    );

    // Deleting: by tag (the image goes with its last tag), then the repository.
    let del = run(&[
        "batch-delete-image",
        "--repository-name",
        "shop/web",
        "--image-ids",
        "imageTag=v1",
    ])
    .unwrap();
    assert_eq!(del["imageIds"][0]["imageDigest"], digests[1]);
    let e = run(&["delete-repository", "--repository-name", "shop/web"]).unwrap_err();
    assert!(e.contains("RepositoryNotEmptyException"), "{e}");
    run(&[
        "delete-repository",
        "--repository-name",
        "shop/web",
        "--force",
    ])
    .unwrap();
    let e = run(&["list-images", "--repository-name", "shop/web"]).unwrap_err();
    assert!(e.contains("RepositoryNotFoundException"), "{e}");

    // get-login-password's password opens /v2/.
    let pw = tokio::task::block_in_place(|| {
        common::aws_command(&bin, &s, &s.secret_key)
            .args(["ecr", "get-login-password"])
            .output()
            .unwrap()
    });
    assert!(
        pw.status.success(),
        "{}",
        String::from_utf8_lossy(&pw.stderr)
    );
    let pw = String::from_utf8(pw.stdout).unwrap();
    let login = Reg {
        base: format!("http://{}", s.registry_addr),
        auth: Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("AWS:{}", pw.trim()))
        )),
    };
    assert_eq!(login.req("GET", "/v2/", &[], b"").await.status, 200);
}

fn got_manifest(v: &Value) -> String {
    v["images"][0]["imageManifest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn sh(cmd: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new("bash")
        .args(["-c", cmd])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pushes_and_pulls_and_a_task_runs_an_image_from_the_registry() {
    if !docker_available() {
        return;
    }
    let Some(bin) = aws_cli() else { return };
    let s = TestServer::start().await;
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    let reg = s.registry_addr.to_string();
    let a = ecr(&s, "CreateRepository", json!({"repositoryName": "web"})).await;
    assert_eq!(a.status, 200, "{:?}", a.body);

    // A three-layer image built here, pushed with docker after `aws ecr get-login-password |
    // docker login`, removed locally, pulled back and run.
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("a"), "layer a\n").unwrap();
    std::fs::write(ctx.path().join("b"), vec![b'b'; 300_000]).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {BUSYBOX}\nCOPY a /a\nCOPY b /b\nCMD [\"cat\", \"/a\"]\n"),
    )
    .unwrap();
    let docker_config = tempfile::tempdir().unwrap();
    let env = [
        ("DOCKER_CONFIG", docker_config.path().to_str().unwrap()),
        ("AWS_ACCESS_KEY_ID", s.access_key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", s.secret_key.as_str()),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("DOCKER_BUILDKIT", "0"),
    ];
    let image = format!("{reg}/web:1");
    let script = format!(
        "set -e
         docker build -q -t {image} {ctx}
         {bin} ecr get-login-password --endpoint-url {endpoint} --region us-east-1 | docker login --username AWS --password-stdin {reg}
         docker push {image}
         docker rmi {image}
         docker pull {image}
         docker run --rm {image}",
        ctx = ctx.path().display(),
        endpoint = s.endpoint,
    );
    let out = tokio::task::block_in_place(|| sh(&script, &env));
    assert!(out.ends_with("layer a\n"), "{out}");
    let described = ecr(&s, "DescribeImages", json!({"repositoryName": "web"})).await;
    let detail = &described.body["imageDetails"][0];
    assert_eq!(detail["imageTags"], json!(["1"]));
    assert_eq!(
        detail["imageManifestMediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let manifest = ecr(
        &s,
        "BatchGetImage",
        json!({"repositoryName": "web", "imageIds": [{"imageTag": "1"}]}),
    )
    .await;
    let m: Value = serde_json::from_str(
        manifest.body["images"][0]["imageManifest"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(m["layers"].as_array().unwrap().len() >= 3, "{m}");

    // A task whose image is only in the registry: the agent pulls it with the server's
    // credentials. A missing tag fails with the registry's own message.
    tokio::task::block_in_place(|| sh(&format!("docker rmi {image}"), &[]));
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(&s, TestAgent::config(&s, agent_dir.path())).await;
    let instance = wait_joined(&agent).await;
    for (family, img) in [
        ("from-registry", image.clone()),
        ("missing", format!("{reg}/web:nope")),
    ] {
        s.ok(
            "RegisterTaskDefinition",
            json!({"family": family, "containerDefinitions": [{"name": "app", "image": img, "memory": 32,
                    "command": ["sleep", "300"]}]}),
        )
        .await;
    }
    let run = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "from-registry"}),
        )
        .await;
    let task = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    wait_task(&s, "default", &task, 60, "RUNNING", |t| {
        t["lastStatus"] == "RUNNING"
    })
    .await;
    let run = s
        .ok(
            "RunTask",
            json!({"cluster": "default", "taskDefinition": "missing"}),
        )
        .await;
    let bad = run["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    let t = wait_task(&s, "default", &bad, 60, "STOPPED", |t| {
        t["lastStatus"] == "STOPPED"
    })
    .await;
    let reason = t["containers"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.starts_with("CannotPullContainerError")
            && (reason.contains("manifest unknown") || reason.contains("not found")),
        "{reason}"
    );
    eprintln!("pull failure as reported: {reason}");
    s.ok("StopTask", json!({"cluster": "default", "task": task}))
        .await;
    wait_task(&s, "default", &task, 60, "STOPPED", |t| {
        t["lastStatus"] == "STOPPED"
    })
    .await;
    agent.stop().await;
    common::docker_cleanup(&instance);
    tokio::task::block_in_place(|| {
        let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    });
}

fn skopeo() -> Option<&'static str> {
    if std::env::var("BERTH_SKIP_SKOPEO").as_deref() == Ok("1") {
        eprintln!("BERTH_SKIP_SKOPEO=1: skipping the skopeo test");
        return None;
    }
    let ok = Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "skopeo is not installed: run scripts/test (it installs Debian's skopeo), or set BERTH_SKIP_SKOPEO=1 to opt out"
    );
    Some("skopeo")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_both_ways_and_inspects() {
    if !docker_available() {
        return;
    }
    let Some(skopeo) = skopeo() else { return };
    let s = TestServer::start().await;
    let a = ecr(&s, "CreateRepository", json!({"repositoryName": "sk"})).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let reg = s.registry_addr.to_string();
    let creds = format!("{}:{}", s.access_key, s.secret_key);
    let layout = tempfile::tempdir().unwrap();
    let oci = format!("oci:{}:v1", layout.path().display());
    let run = |args: &[&str]| {
        tokio::task::block_in_place(|| {
            let out = Command::new(skopeo).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "skopeo {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    // Docker's local image → Berth (Docker schema 2).
    run(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &format!("docker-daemon:{BUSYBOX}"),
        &format!("docker://{reg}/sk:docker"),
    ]);
    // Berth → an OCI layout on disk → Berth again, now as an OCI manifest.
    run(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &format!("docker://{reg}/sk:docker"),
        &oci,
    ]);
    run(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        "--format",
        "oci",
        &oci,
        &format!("docker://{reg}/sk:oci"),
    ]);
    let raw: Value = serde_json::from_str(&run(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{reg}/sk:oci"),
    ]))
    .unwrap();
    assert_eq!(raw["mediaType"], OCI, "{raw}");
    let info: Value = serde_json::from_str(&run(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{reg}/sk:docker"),
    ]))
    .unwrap();
    assert_eq!(info["Os"], "linux");
    assert!(!info["Layers"].as_array().unwrap().is_empty());
    let tags: Value = serde_json::from_str(&run(&[
        "list-tags",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{reg}/sk"),
    ]))
    .unwrap();
    assert_eq!(tags["Tags"], json!(["docker", "oci"]));
    // The same layers back out: the OCI copy's layer digests are the Docker copy's.
    let oci_info: Value = serde_json::from_str(&run(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("docker://{reg}/sk:oci"),
    ]))
    .unwrap();
    assert_eq!(oci_info["Layers"], info["Layers"]);
}

#[tokio::test]
async fn the_aws_sdk_for_ecr_works_unchanged() {
    use aws_sdk_ecr::error::ProvideErrorMetadata;
    let s = TestServer::start().await;
    let ecr = common::sdk_client!(aws_sdk_ecr, &s);
    let r = ecr
        .create_repository()
        .repository_name("sdk/app")
        .image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::Immutable)
        .send()
        .await
        .unwrap();
    let repo = r.repository().unwrap();
    assert_eq!(
        repo.repository_uri(),
        Some(format!("{}/sdk/app", s.registry_addr).as_str())
    );
    assert!(repo.created_at().is_some());
    let e = ecr
        .describe_images()
        .repository_name("ghost")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("RepositoryNotFoundException"));
    let token = ecr.get_authorization_token().send().await.unwrap();
    let data = &token.authorization_data()[0];
    assert_eq!(
        data.proxy_endpoint(),
        Some(format!("http://{}", s.registry_addr).as_str())
    );
    let expires = data.expires_at().unwrap().secs();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((expires - now - 12 * 3600).abs() < 60, "a 12-hour token");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data.authorization_token().unwrap())
        .unwrap();
    let decoded = String::from_utf8(decoded).unwrap();
    let (user, password) = decoded.split_once(':').unwrap();
    assert_eq!(user, "AWS");
    let login = Reg {
        base: format!("http://{}", s.registry_addr),
        auth: Some(format!("Bearer {password}")),
    };
    assert_eq!(
        login.req("GET", "/v2/_catalog", &[], b"").await.json()["repositories"],
        json!(["sdk/app"])
    );
    let list = ecr.describe_repositories().send().await.unwrap();
    assert_eq!(list.repositories().len(), 1);
    ecr.delete_repository()
        .repository_name("sdk/app")
        .send()
        .await
        .unwrap();
}
