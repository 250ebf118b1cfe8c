//! The OCI distribution protocol (v1.1) under `/v2/`, on the registry's own listener.
//!
//! One request: authenticate ([`Registry::authenticate`]) → [`route`] the path to a [`Route`]
//! → one handler per route, which calls [`crate::images`] → headers the spec and docker
//! expect, or `{"errors":[{"code","message"}]}`. Blob bodies stream both ways.

use crate::auth::Access;
use crate::blobs::ByteStream;
use crate::manifest::{MAX_MANIFEST, OCI_INDEX};
use crate::names::{check_repository_name, Digest, Reference};
use crate::{Error, Registry};
use berth_api::ErrorKind;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;

pub type Body = UnsyncBoxBody<Bytes, Error>;

/// How long a client may stay silent in the middle of a body.
const BODY_IDLE: Duration = Duration::from_secs(60);

/// Serves `/v2/` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "registry accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let reg = registry.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let reg = reg.clone();
                    async move { Ok::<_, Infallible>(handle(reg, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "registry connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("registry shutdown: gave up waiting for requests in flight"),
    }
    Ok(())
}

/// What a `/v2/` path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Token,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    Uploads(String),
    Upload(String, String),
    Referrers(String, String),
}

/// Parses a path under `/v2/`. Repository names may hold `/`, so the route is found by its
/// last marker, as the reference registry does.
pub fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    match rest {
        "" | "/" => return Some(Route::Base),
        "/_catalog" => return Some(Route::Catalog),
        "/token" => return Some(Route::Token),
        _ => {}
    }
    let rest = rest.strip_prefix('/')?;
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name.into()));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or(rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::Uploads(name.into()));
    }
    for (marker, make) in [
        (
            "/blobs/uploads/",
            Route::Upload as fn(String, String) -> Route,
        ),
        ("/manifests/", Route::Manifest),
        ("/blobs/", Route::Blob),
        ("/referrers/", Route::Referrers),
    ] {
        if let Some(at) = rest.rfind(marker) {
            let (name, tail) = (&rest[..at], &rest[at + marker.len()..]);
            if !name.is_empty() && !tail.is_empty() && !tail.contains('/') {
                return Some(make(name.into(), tail.into()));
            }
        }
    }
    None
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn empty() -> Body {
    full(Bytes::new())
}

fn streaming(stream: ByteStream) -> Body {
    StreamBody::new(stream.map(|r| r.map(Frame::data))).boxed_unsync()
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: empty(),
        }
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
    fn body(mut self, body: Body) -> Reply {
        self.body = body;
        self
    }
    fn json(self, value: &serde_json::Value) -> Reply {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.header("content-type", "application/json")
            .header("content-length", bytes.len().to_string())
            .body(full(bytes))
    }
}

fn error_reply(e: &Error, head: bool, host: &str) -> Reply {
    let (code, status) = e.oci_code();
    if status >= 500 {
        tracing::error!(error = %e, "registry request failed");
    }
    let mut reply = Reply::new(status);
    if status == 401 {
        reply = reply.header(
            "www-authenticate",
            format!("Bearer realm=\"http://{host}/v2/token\",service=\"berth-registry\""),
        );
    }
    let body =
        serde_json::json!({"errors": [{"code": code, "message": e.to_string(), "detail": null}]});
    if head {
        reply
    } else {
        reply.json(&body)
    }
}

async fn handle(reg: Registry, req: Request<Incoming>) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or(&reg.config.endpoint)
        .to_string();
    let head = method == Method::HEAD;
    let reply = match dispatch(&reg, req).await {
        Ok(r) => r,
        Err(e) => error_reply(&e, head, &host),
    };
    let status = reply.status;
    if status >= 400 && status != 401 {
        tracing::info!(%method, path, status, "registry request refused");
    } else {
        tracing::debug!(%method, path, status, ms = started.elapsed().as_millis() as u64, "registry request");
    }
    let mut resp = Response::new(reply.body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

fn query(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The request body as a stream of chunks, each within [`BODY_IDLE`] of the last.
fn body_stream(body: Incoming) -> crate::blobs::ByteStream {
    futures::stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        loop {
            match tokio::time::timeout(BODY_IDLE, body.frame()).await {
                Err(_) => {
                    return Some((
                        Err(Error::BlobUploadInvalid(format!(
                            "the client sent nothing for {} seconds",
                            BODY_IDLE.as_secs()
                        ))),
                        None,
                    ))
                }
                Ok(None) => return None,
                Ok(Some(Err(e))) => {
                    return Some((
                        Err(Error::BlobUploadInvalid(format!(
                            "the request body ended early: {e}"
                        ))),
                        None,
                    ))
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Some((Ok(data), Some(body)));
                    }
                }
            }
        }
    })
    .boxed()
}

/// Reads a small body (a manifest) whole, refusing more than `max` bytes.
async fn small_body(body: Incoming, max: usize) -> Result<Bytes, Error> {
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(BODY_IDLE, limited.collect()).await {
        Err(_) => Err(Error::ManifestInvalid(
            "the manifest did not arrive in time".into(),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Error::SizeInvalid(
            format!("the manifest exceeds the limit of {max} bytes"),
        )),
        Ok(Err(e)) => Err(Error::ManifestInvalid(format!(
            "the manifest could not be read: {e}"
        ))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn range_header(size: u64) -> String {
    // The spec's form: the inclusive range received so far ("0-0" before any byte).
    format!("0-{}", size.saturating_sub(1))
}

fn upload_reply(status: u16, name: &str, id: &str, size: u64) -> Reply {
    Reply::new(status)
        .header("location", upload_location(name, id))
        .header("range", range_header(size))
        .header("docker-upload-uuid", id)
        .header("content-length", "0")
}

fn blob_created(name: &str, digest: &Digest) -> Reply {
    Reply::new(201)
        .header("location", format!("/v2/{name}/blobs/{digest}"))
        .header("docker-content-digest", digest.as_str())
        .header("content-length", "0")
}

/// `Content-Range: START-END` of a chunk: its start.
fn chunk_start(h: &HeaderMap) -> Result<Option<u64>, Error> {
    let Some(v) = header(h, "content-range") else {
        return Ok(None);
    };
    let v = v
        .trim()
        .trim_start_matches("bytes")
        .trim()
        .trim_start_matches('=');
    let (a, _) = v
        .split_once('-')
        .ok_or_else(|| Error::RangeInvalid(format!("Content-Range '{v}' is not START-END")))?;
    a.trim()
        .parse()
        .map(Some)
        .map_err(|_| Error::RangeInvalid(format!("Content-Range '{v}' is not START-END")))
}

/// `Range: bytes=A-B` for a blob of `size` bytes: the half-open range to send.
fn byte_range(h: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, Error> {
    let Some(v) = header(h, "range") else {
        return Ok(None);
    };
    let bad = || {
        Error::RangeInvalid(format!(
            "Range '{v}' cannot be satisfied for a blob of {size} bytes"
        ))
    };
    let spec = v.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| bad())?;
            (size.saturating_sub(n), size)
        }
        (a, "") => (a.parse().map_err(|_| bad())?, size),
        (a, b) => {
            let a: u64 = a.parse().map_err(|_| bad())?;
            let b: u64 = b.parse().map_err(|_| bad())?;
            (a, (b + 1).min(size))
        }
    };
    if start >= size || start >= end {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

fn paginate(
    uri: &http::Uri,
    all: Vec<String>,
    base: &str,
) -> Result<(Vec<String>, Option<String>), Error> {
    let n = match query(uri, "n") {
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| Error::Invalid(format!("n='{n}' is not a number")))?,
        ),
        None => None,
    };
    let last = query(uri, "last");
    let mut items: Vec<String> = match &last {
        Some(l) => all
            .into_iter()
            .filter(|x| x.as_str() > l.as_str())
            .collect(),
        None => all,
    };
    let mut link = None;
    if let Some(n) = n {
        if items.len() > n {
            items.truncate(n);
            if let Some(last) = items.last() {
                link = Some(format!("<{base}?last={last}&n={n}>; rel=\"next\""));
            }
        }
    }
    Ok((items, link))
}

async fn dispatch(reg: &Registry, req: Request<Incoming>) -> Result<Reply, Error> {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let Some(route) = route(parts.uri.path()) else {
        return Err(Error::NameInvalid(format!(
            "no such route: {} {}",
            method,
            parts.uri.path()
        )));
    };
    let auth = header(&parts.headers, "authorization");
    if route == Route::Token {
        return token(reg, auth).await;
    }
    let access = match reg.authenticate(auth).await {
        Ok(a) => a,
        // GetDownloadUrlForLayer's URLs carry their password in the query.
        Err(e) => match (&route, query(&parts.uri, "berth-token")) {
            (Route::Blob(..), Some(t)) if method == Method::GET || method == Method::HEAD => reg
                .authenticate(Some(&format!("Bearer {t}")))
                .await
                .map_err(|_| e)?,
            _ => return Err(e),
        },
    };
    let writes = !(method == Method::GET || method == Method::HEAD);
    if writes && !access.can_write() {
        return Err(Error::Denied(match &access {
            Access::Agent(p) => format!(
                "the key of the agent of {} may only pull",
                p.instance.as_deref().unwrap_or("?")
            ),
            _ => "anonymous access may only pull".into(),
        }));
    }
    let head = method == Method::HEAD;
    match route {
        Route::Token => token(reg, auth).await,
        Route::Base => Ok(Reply::new(200).json(&serde_json::json!({}))),
        Route::Catalog => {
            let names: Vec<String> = reg
                .repositories(None, None)
                .await?
                .into_iter()
                .filter_map(|r| r.repository.repository_name)
                .collect();
            let (names, link) = paginate(&parts.uri, names, "/v2/_catalog")?;
            let mut r = Reply::new(200).json(&serde_json::json!({ "repositories": names }));
            if let Some(l) = link {
                r = r.header("link", l);
            }
            Ok(r)
        }
        Route::Tags(name) => {
            let tags: Vec<String> = reg.tags(&name).await?.into_iter().map(|(t, _)| t).collect();
            let (tags, link) = paginate(&parts.uri, tags, &format!("/v2/{name}/tags/list"))?;
            let mut r = Reply::new(200).json(&serde_json::json!({ "name": name, "tags": tags }));
            if let Some(l) = link {
                r = r.header("link", l);
            }
            Ok(r)
        }
        Route::Manifest(name, reference) => {
            check_repository_name(&name)?;
            let reference = Reference::parse(&reference)?;
            match method {
                Method::GET | Method::HEAD => {
                    let image = match reg.get_manifest(&name, &reference).await {
                        // Not here, under a pull-through prefix: the upstream is out of reach.
                        Err(Error::Ecr(e)) if e.kind == ErrorKind::RepositoryNotFound => {
                            return Err(match reg.unreachable_upstream(&name).await {
                                Some(unreachable) => unreachable,
                                None => Error::Ecr(e),
                            })
                        }
                        found => found?,
                    };
                    let len = image.manifest.len();
                    let r = Reply::new(200)
                        .header("content-type", image.media_type.clone())
                        .header("docker-content-digest", image.digest.clone())
                        .header("etag", format!("\"{}\"", image.digest))
                        .header("content-length", len.to_string());
                    Ok(if head {
                        r
                    } else {
                        r.body(full(image.manifest))
                    })
                }
                Method::PUT => {
                    let bytes = small_body(body, MAX_MANIFEST).await?;
                    reg.create_on_push(&name).await?;
                    let (digest, parsed) = reg
                        .put_manifest(
                            &name,
                            &reference,
                            header(&parts.headers, "content-type"),
                            &bytes,
                        )
                        .await?;
                    reg.replicate_push(&name, &digest, &reference).await;
                    if let Reference::Tag(_) = reference {
                        // A new tagged image may put older ones past the lifecycle policy.
                        if let Err(e) = reg.enforce_lifecycle(&name).await {
                            tracing::warn!(repository = name, error = %e, "lifecycle policy failed");
                        }
                    }
                    let mut r = Reply::new(201)
                        .header("location", format!("/v2/{name}/manifests/{digest}"))
                        .header("docker-content-digest", digest.as_str())
                        .header("content-length", "0");
                    if let Some(s) = parsed.subject {
                        r = r.header("oci-subject", s.as_str());
                    }
                    Ok(r)
                }
                Method::DELETE => {
                    match reference {
                        Reference::Digest(d) => {
                            reg.delete_manifest(&name, &d).await?;
                        }
                        Reference::Tag(t) => {
                            reg.delete_tag(&name, &t).await?;
                        }
                    }
                    Ok(Reply::new(202).header("content-length", "0"))
                }
                _ => Err(unsupported(&method)),
            }
        }
        Route::Blob(name, digest) => {
            check_repository_name(&name)?;
            let digest = Digest::parse(&digest)?;
            match method {
                Method::GET | Method::HEAD => {
                    reg.repository(&name).await?;
                    let Some(size) = reg.link(&name, &digest).await? else {
                        return Err(Error::BlobUnknown(format!(
                            "blob {digest} is unknown to repository '{name}'"
                        )));
                    };
                    let range = byte_range(&parts.headers, size)?;
                    let (start, end) = range.unwrap_or((0, size));
                    let mut r = Reply::new(if range.is_some() { 206 } else { 200 })
                        .header("content-type", "application/octet-stream")
                        .header("docker-content-digest", digest.as_str())
                        .header("accept-ranges", "bytes")
                        .header("etag", format!("\"{digest}\""))
                        .header("content-length", (end - start).to_string());
                    if range.is_some() {
                        r = r.header("content-range", format!("bytes {start}-{}/{size}", end - 1));
                    }
                    if head {
                        return Ok(r);
                    }
                    let stream = reg.blobs.read(&digest, start, end).await?;
                    Ok(r.body(streaming(stream)))
                }
                Method::DELETE => {
                    reg.delete_blob(&name, &digest).await?;
                    Ok(Reply::new(202).header("content-length", "0"))
                }
                _ => Err(unsupported(&method)),
            }
        }
        Route::Uploads(name) => {
            check_repository_name(&name)?;
            if method != Method::POST {
                return Err(unsupported(&method));
            }
            // A push's first write: a CREATE_ON_PUSH template may make the repository now.
            reg.create_on_push(&name).await?;
            if let Some(mount) = query(&parts.uri, "mount") {
                let digest = Digest::parse(&mount)?;
                if let Some(from) = query(&parts.uri, "from") {
                    reg.repository(&name).await?;
                    if reg.mount(&from, &name, &digest).await?.is_some() {
                        return Ok(blob_created(&name, &digest));
                    }
                }
                // Not mountable: an ordinary upload, as the spec says.
            }
            if let Some(d) = query(&parts.uri, "digest") {
                // Monolithic: the whole blob in this request.
                let digest = Digest::parse(&d)?;
                let id = reg.start_upload(&name).await?;
                let appended = reg.blobs.upload_append(&id, 0, body_stream(body)).await;
                if let Err(e) = appended {
                    let _ = reg.cancel_upload(&name, &id).await;
                    return Err(e);
                }
                reg.commit_upload(&name, &id, &digest).await?;
                return Ok(blob_created(&name, &digest));
            }
            let id = reg.start_upload(&name).await?;
            Ok(upload_reply(202, &name, &id, 0))
        }
        Route::Upload(name, id) => {
            check_repository_name(&name)?;
            match method {
                Method::GET => {
                    let size = reg.upload_status(&name, &id).await?;
                    Ok(upload_reply(204, &name, &id, size))
                }
                Method::PATCH => {
                    let size = reg.upload_status(&name, &id).await?;
                    let offset = chunk_start(&parts.headers)?.unwrap_or(size);
                    let size = reg
                        .blobs
                        .upload_append(&id, offset, body_stream(body))
                        .await?;
                    Ok(upload_reply(202, &name, &id, size))
                }
                Method::PUT => {
                    let Some(d) = query(&parts.uri, "digest") else {
                        return Err(Error::DigestInvalid(
                            "completing an upload needs ?digest=".into(),
                        ));
                    };
                    let digest = Digest::parse(&d)?;
                    let size = reg.upload_status(&name, &id).await?;
                    let offset = chunk_start(&parts.headers)?.unwrap_or(size);
                    reg.blobs
                        .upload_append(&id, offset, body_stream(body))
                        .await?;
                    reg.commit_upload(&name, &id, &digest).await?;
                    Ok(blob_created(&name, &digest))
                }
                Method::DELETE => {
                    reg.cancel_upload(&name, &id).await?;
                    Ok(Reply::new(204).header("content-length", "0"))
                }
                _ => Err(unsupported(&method)),
            }
        }
        Route::Referrers(name, digest) => {
            if method != Method::GET {
                return Err(unsupported(&method));
            }
            let digest = Digest::parse(&digest)?;
            let filter = query(&parts.uri, "artifactType");
            let mut manifests = Vec::new();
            for (image, _) in reg.images(&name).await? {
                if image.subject.as_deref() != Some(digest.as_str()) {
                    continue;
                }
                if let Some(f) = &filter {
                    if image.artifact_type.as_deref() != Some(f.as_str()) {
                        continue;
                    }
                }
                let mut d = serde_json::json!({
                    "mediaType": image.media_type,
                    "digest": image.digest,
                    "size": image.manifest.len(),
                });
                if let Some(a) = &image.artifact_type {
                    d["artifactType"] = a.clone().into();
                }
                if let Some(a) = &image.annotations {
                    d["annotations"] = serde_json::Value::Object(a.clone());
                }
                manifests.push(d);
            }
            let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
            let bytes = serde_json::to_vec(&index).unwrap_or_default();
            let mut r = Reply::new(200)
                .header("content-type", OCI_INDEX)
                .header("content-length", bytes.len().to_string())
                .body(full(bytes));
            if filter.is_some() {
                r = r.header("oci-filters-applied", "artifactType");
            }
            Ok(r)
        }
    }
}

fn unsupported(method: &Method) -> Error {
    Error::Unsupported(format!("method {method} is not supported here"))
}

/// Docker's token flow: the client presents its credentials here and gets a bearer token.
async fn token(reg: &Registry, auth: Option<&str>) -> Result<Reply, Error> {
    let access = reg.authenticate(auth).await?;
    let (token, expires) = match &access {
        Access::Anonymous => (
            "anonymous".to_string(),
            SystemTime::now() + reg.config.token_lifetime,
        ),
        Access::User(p) | Access::Agent(p) => reg.issue_password(p),
    };
    let expires_in = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .as_secs();
    let issued_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Ok(Reply::new(200).json(&serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
        "issued_at": issued_at,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let d = "sha256:aa";
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(route("/v2/a/b/tags/list"), Some(Route::Tags("a/b".into())));
        assert_eq!(
            route("/v2/a/b/manifests/latest"),
            Some(Route::Manifest("a/b".into(), "latest".into()))
        );
        assert_eq!(
            route(&format!("/v2/web/blobs/{d}")),
            Some(Route::Blob("web".into(), d.into()))
        );
        assert_eq!(
            route("/v2/web/blobs/uploads/"),
            Some(Route::Uploads("web".into()))
        );
        assert_eq!(
            route("/v2/web/blobs/uploads/abc-1"),
            Some(Route::Upload("web".into(), "abc-1".into()))
        );
        assert_eq!(
            route(&format!("/v2/web/referrers/{d}")),
            Some(Route::Referrers("web".into(), d.into()))
        );
        assert_eq!(route("/v2/web"), None);
        assert_eq!(route("/other"), None);
    }

    #[test]
    fn ranges() {
        let mut h = HeaderMap::new();
        assert_eq!(byte_range(&h, 10).unwrap(), None);
        h.insert("range", HeaderValue::from_static("bytes=2-4"));
        assert_eq!(byte_range(&h, 10).unwrap(), Some((2, 5)));
        h.insert("range", HeaderValue::from_static("bytes=7-"));
        assert_eq!(byte_range(&h, 10).unwrap(), Some((7, 10)));
        h.insert("range", HeaderValue::from_static("bytes=-3"));
        assert_eq!(byte_range(&h, 10).unwrap(), Some((7, 10)));
        h.insert("range", HeaderValue::from_static("bytes=2-100"));
        assert_eq!(byte_range(&h, 10).unwrap(), Some((2, 10)));
        h.insert("range", HeaderValue::from_static("bytes=10-"));
        assert!(byte_range(&h, 10).is_err());
        h.insert("range", HeaderValue::from_static("items=1-2"));
        assert!(byte_range(&h, 10).is_err());
        assert_eq!(percent_decode("sha256%3Aab"), "sha256:ab");
    }
}
