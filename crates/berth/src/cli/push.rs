//! `berth image push`: a local image into a repository of Berth's registry, through the
//! Docker Engine on this machine, with a progress bar per layer.
//!
//! The registry's credentials come from ECR's GetAuthorizationToken and go to the engine with
//! the push (`X-Registry-Auth`), so no `docker login` is needed and none is stored. The engine
//! is spoken to over its socket directly: its push stream names each layer (`id`), which is
//! what a bar per layer needs.

use super::render::{bytes, stderr_is_terminal, Output};
use super::{Ctx, Failed};
use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use berth_api::ecr::*;
use berth_api::query::client::percent_encode;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The longest a push may go without a word from the engine.
const STALL: Duration = Duration::from_secs(300);

/// `berth image push`'s arguments.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The local image (`name[:tag]`, as `docker images` lists it).
    pub image: String,
    /// The repository and tag to push to (`repo[:tag]`); default: the local image's name and
    /// tag, without a registry host.
    pub target: Option<String>,
}

pub async fn run(ctx: &Ctx, args: PushArgs) -> Result<(), Failed> {
    let (repository, tag) = target(&args.image, args.target.as_deref())?;
    // The repository first: a typo is ECR's RepositoryNotFoundException, not a registry error.
    let r: DescribeRepositoriesResponse = ctx
        .ecr(
            "DescribeRepositories",
            &DescribeRepositoriesRequest {
                repository_names: Some(vec![repository.clone()]),
                ..Default::default()
            },
        )
        .await?;
    let uri = r
        .repositories
        .unwrap_or_default()
        .into_iter()
        .find_map(|r| r.repository_uri)
        .ok_or_else(|| anyhow!("repository {repository} has no URI"))?;
    let token: GetAuthorizationTokenResponse = ctx
        .ecr(
            "GetAuthorizationToken",
            &GetAuthorizationTokenRequest::default(),
        )
        .await?;
    let auth = token
        .authorization_data
        .unwrap_or_default()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("GetAuthorizationToken answered no authorization data"))?;
    let registry = uri.split('/').next().unwrap_or_default().to_string();
    let credentials = registry_auth(auth.authorization_token.as_deref(), &registry)?;

    check_reference(&uri)?;
    let engine = Engine::from_environment()?;
    let remote = format!("{uri}:{tag}");
    let Some(local) = engine.image_id(&args.image).await? else {
        return Err(anyhow!(
            "cannot tag {} as {remote}: No such image: {}",
            args.image,
            args.image
        )
        .into());
    };
    // The push needs the image under its registry name. A name the user already has is used
    // as it is (and kept); one made for the push is removed again after it.
    let tagged = match engine.image_id(&remote).await? {
        Some(id) if id == local => false,
        Some(_) => {
            return Err(anyhow!(
                "{remote} already names another local image: push it with `docker push {remote}`, or choose another tag"
            )
            .into())
        }
        None => true,
    };
    if tagged {
        engine
            .post(
                &format!(
                    "/images/{}/tag?repo={}&tag={}",
                    args.image,
                    percent_encode(&uri),
                    percent_encode(&tag)
                ),
                None,
            )
            .await?
            .check("tag")
            .await
            .with_context(|| format!("cannot tag {} as {remote}", args.image))?;
    }
    let pushed = push(&engine, &uri, &tag, &credentials).await;
    if tagged {
        // The push's own name for the image goes again: the engine is left as it was found.
        let _ = engine.delete(&format!("/images/{remote}?noprune=1")).await;
    }
    let digest = pushed?;
    let described: DescribeImagesResponse = ctx
        .ecr(
            "DescribeImages",
            &DescribeImagesRequest {
                repository_name: Some(repository),
                image_ids: Some(vec![ImageIdentifier {
                    image_tag: Some(tag.clone()),
                    ..Default::default()
                }]),
                ..Default::default()
            },
        )
        .await?;
    let detail = described.image_details.unwrap_or_default().pop();
    match ctx.output {
        Output::Json => super::render::emit_object(ctx.output, &detail)?,
        Output::Text => out!(
            "{remote}@{digest}\t{}",
            detail.and_then(|d| d.image_size_in_bytes).unwrap_or(0)
        ),
        Output::Table => out!(
            "{remote}@{digest} ({})",
            bytes(detail.and_then(|d| d.image_size_in_bytes))
        ),
    }
    Ok(())
}

/// Pushes `uri:tag`, showing each layer's progress on stderr; the manifest's digest.
async fn push(engine: &Engine, uri: &str, tag: &str, credentials: &str) -> Result<String, Failed> {
    let resp = engine
        .post(
            &format!("/images/{uri}/push?tag={}", percent_encode(tag)),
            Some(credentials),
        )
        .await?
        .check("push")
        .await?;
    let mut view = View::new();
    let mut progress = Progress::default();
    let mut body = resp.into_body();
    let mut pending = Vec::new();
    loop {
        let frame = tokio::time::timeout(STALL, body.frame())
            .await
            .map_err(|_| anyhow!("the engine said nothing about the push for {STALL:?}"))?;
        let Some(frame) = frame else { break };
        let frame = frame.context("the engine's push stream broke")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            match progress.apply(&event) {
                Ok(Some(layer)) => view.show(&layer, &progress.layers[&layer]),
                Ok(None) => {}
                Err(message) => {
                    view.finish();
                    return Err(anyhow!("the push failed: {message}").into());
                }
            }
        }
    }
    view.finish();
    progress
        .digest
        .ok_or_else(|| anyhow!("the engine ended the push without a digest").into())
}

/// The repository and tag to push `image` to: `target` (`repo[:tag]`) if given, else the
/// image's own name without a registry host; the tag defaults to `latest`.
pub fn target(image: &str, target: Option<&str>) -> anyhow::Result<(String, String)> {
    check_reference(image)?;
    if let Some(t) = target {
        check_reference(t)?;
    }
    let name = match target {
        Some(t) => t,
        None => {
            let mut parts = image.splitn(2, '/');
            let first = parts.next().unwrap_or_default();
            match parts.next() {
                // Docker's rule: a first component with '.' or ':', or `localhost`, is a host.
                Some(rest)
                    if first.contains('.') || first.contains(':') || first == "localhost" =>
                {
                    rest
                }
                _ => image,
            }
        }
    };
    let name = name.split('@').next().unwrap_or_default();
    let (repo, tag) = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], &name[i + 1..]),
        _ => (name, "latest"),
    };
    if repo.is_empty() || tag.is_empty() {
        bail!("'{name}' is not a repository and tag (repo[:tag])");
    }
    Ok((repo.to_string(), tag.to_string()))
}

/// An image reference as Docker's grammar allows (letters, digits, `.` `_` `-` `/` `:` `@`,
/// no empty or `..` path segment): it goes into the engine's URL paths as it is.
fn check_reference(r: &str) -> anyhow::Result<()> {
    let chars_ok = !r.is_empty()
        && r.len() <= 512
        && r.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@')
        });
    let segments_ok = r.split('/').all(|s| !s.is_empty() && s != "." && s != "..");
    if chars_ok && segments_ok {
        Ok(())
    } else {
        bail!("'{r}' is not an image reference (name[:tag] of letters, digits, '.', '_', '-' and '/')")
    }
}

/// The engine's `X-Registry-Auth`: ECR's token (`base64("AWS:password")`) as the JSON the
/// engine reads, URL-safe base64.
fn registry_auth(token: Option<&str>, registry: &str) -> anyhow::Result<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let decoded = token
        .and_then(|t| b64.decode(t).ok())
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| anyhow!("GetAuthorizationToken answered a token that is not base64"))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| anyhow!("the registry token is not user:password"))?;
    let json = serde_json::json!({
        "username": username,
        "password": password,
        "serveraddress": registry,
    });
    Ok(base64::engine::general_purpose::URL_SAFE.encode(json.to_string()))
}

/// One layer, as the engine's push stream tells of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layer {
    pub status: String,
    pub current: u64,
    pub total: u64,
}

impl Layer {
    /// Whether the engine is done with this layer.
    pub fn done(&self) -> bool {
        self.status == "Pushed"
            || self.status == "Layer already exists"
            || self.status.starts_with("Mounted from")
    }
}

/// What the push stream has said so far: each layer's state, and the digest at the end.
#[derive(Debug, Default)]
pub struct Progress {
    pub layers: BTreeMap<String, Layer>,
    pub digest: Option<String>,
}

impl Progress {
    /// Takes in one event of the stream; the layer it changed, or the engine's error.
    pub fn apply(&mut self, event: &Value) -> Result<Option<String>, String> {
        if let Some(e) = event.get("errorDetail").and_then(|d| d.get("message")) {
            return Err(e.as_str().unwrap_or_default().to_string());
        }
        if let Some(e) = event.get("error").and_then(Value::as_str) {
            return Err(e.to_string());
        }
        if let Some(digest) = event
            .get("aux")
            .and_then(|a| a.get("Digest"))
            .and_then(Value::as_str)
        {
            self.digest = Some(digest.to_string());
            return Ok(None);
        }
        let (Some(id), Some(status)) = (
            event.get("id").and_then(Value::as_str),
            event.get("status").and_then(Value::as_str),
        ) else {
            return Ok(None);
        };
        // The tag's own line ("The push refers to…", "1: digest: …") names the tag as `id`.
        if status.contains("digest:") {
            return Ok(None);
        }
        let layer = self.layers.entry(id.to_string()).or_default();
        layer.status = status.to_string();
        let detail = event.get("progressDetail");
        let number = |k: &str| detail.and_then(|d| d.get(k)).and_then(Value::as_u64);
        if let Some(total) = number("total") {
            layer.total = total;
        }
        if let Some(current) = number("current") {
            layer.current = current;
        }
        if layer.done() && layer.total > 0 {
            layer.current = layer.total;
        }
        Ok(Some(id.to_string()))
    }
}

/// How progress is shown: a bar per layer on a terminal, a line per finished layer otherwise.
struct View {
    bars: Option<(
        indicatif::MultiProgress,
        BTreeMap<String, indicatif::ProgressBar>,
    )>,
    said: BTreeMap<String, String>,
}

impl View {
    fn new() -> View {
        View {
            bars: stderr_is_terminal().then(|| (indicatif::MultiProgress::new(), BTreeMap::new())),
            said: BTreeMap::new(),
        }
    }

    fn show(&mut self, id: &str, layer: &Layer) {
        let Some((multi, bars)) = &mut self.bars else {
            if layer.done() && self.said.get(id) != Some(&layer.status) {
                eprintln!("{id}: {}", layer.status);
                self.said.insert(id.to_string(), layer.status.clone());
            }
            return;
        };
        let bar = bars.entry(id.to_string()).or_insert_with(|| {
            let bar = multi.add(indicatif::ProgressBar::new(0));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_prefix(id.to_string());
            bar
        });
        bar.set_length(layer.total);
        bar.set_position(layer.current);
        bar.set_message(layer.status.clone());
        if layer.done() {
            bar.finish();
        }
    }

    fn finish(&mut self) {
        if let Some((_, bars)) = &self.bars {
            for bar in bars.values() {
                bar.abandon();
            }
        }
    }
}

/// The Docker Engine on this machine: `DOCKER_HOST` (`unix://PATH` or `tcp://HOST:PORT`),
/// else its default socket.
enum Engine {
    Unix(String),
    Tcp(String),
}

/// An answer of the engine.
struct Answer(hyper::Response<Incoming>);

impl Answer {
    /// The answer if it is a success, else the engine's own message (`{"message": …}`).
    async fn check(self, what: &str) -> anyhow::Result<hyper::Response<Incoming>> {
        let status = self.0.status();
        if status.is_success() {
            return Ok(self.0);
        }
        let body = tokio::time::timeout(Duration::from_secs(10), self.0.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        Err(anyhow!(
            "the engine refused the {what} (HTTP {status}): {message}"
        ))
    }
}

impl Engine {
    fn from_environment() -> anyhow::Result<Engine> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_default();
        if host.is_empty() {
            return Ok(Engine::Unix("/var/run/docker.sock".into()));
        }
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(Engine::Unix(path.to_string()));
        }
        if let Some(addr) = host.strip_prefix("tcp://") {
            return Ok(Engine::Tcp(addr.trim_end_matches('/').to_string()));
        }
        bail!("DOCKER_HOST={host}: only unix:// and tcp:// engines are supported")
    }

    /// The id of the local image `name`, if the engine has one by that name.
    async fn image_id(&self, name: &str) -> anyhow::Result<Option<String>> {
        let resp = self
            .request("GET", &format!("/images/{name}/json"), None)
            .await?;
        if resp.0.status() == hyper::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = resp.check("image inspection").await?;
        let body = tokio::time::timeout(Duration::from_secs(30), resp.into_body().collect())
            .await
            .map_err(|_| anyhow!("the engine did not describe {name} in time"))?
            .context("the engine's answer broke")?
            .to_bytes();
        let v: Value = serde_json::from_slice(&body).context("the engine's image is not JSON")?;
        Ok(v.get("Id").and_then(Value::as_str).map(str::to_string))
    }

    async fn post(&self, path: &str, auth: Option<&str>) -> anyhow::Result<Answer> {
        self.request("POST", path, auth).await
    }

    async fn delete(&self, path: &str) -> anyhow::Result<Answer> {
        self.request("DELETE", path, None).await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "docker");
        if let Some(auth) = auth {
            req = req.header("x-registry-auth", auth);
        }
        let req = req.body(Empty::<Bytes>::new())?;
        let unreachable = |e: &dyn std::fmt::Display| {
            anyhow!(
                "cannot reach the Docker Engine at {}: {e} (is Docker running? DOCKER_HOST names another engine)",
                self.name()
            )
        };
        let resp = match self {
            Engine::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| unreachable(&e))?;
                send(TokioIo::new(stream), req).await
            }
            Engine::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| unreachable(&e))?;
                send(TokioIo::new(stream), req).await
            }
        };
        resp.map(Answer).map_err(|e| unreachable(&e))
    }

    fn name(&self) -> &str {
        match self {
            Engine::Unix(p) | Engine::Tcp(p) => p,
        }
    }
}

async fn send<T>(
    io: T,
    req: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<Incoming>, hyper::Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    sender.send_request(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_default_to_the_images_name_without_its_registry() {
        let t = |image: &str, target: Option<&str>| target_or(image, target);
        assert_eq!(t("web", None), ("web".into(), "latest".into()));
        assert_eq!(t("team/web:1.2", None), ("team/web".into(), "1.2".into()));
        assert_eq!(t("127.0.0.1:7060/web:3", None), ("web".into(), "3".into()));
        assert_eq!(t("localhost/web", None), ("web".into(), "latest".into()));
        assert_eq!(
            t("reg.example:5000/a/b", None),
            ("a/b".into(), "latest".into())
        );
        assert_eq!(t("web@sha256:abc", None), ("web".into(), "latest".into()));
        assert_eq!(t("web:1", Some("app:v2")), ("app".into(), "v2".into()));
        assert_eq!(t("web:1", Some("app")), ("app".into(), "latest".into()));
        assert!(target("web", Some(":v1")).is_err());
        assert!(target("web", Some("app:")).is_err());
    }

    fn target_or(image: &str, t: Option<&str>) -> (String, String) {
        target(image, t).unwrap()
    }

    #[test]
    fn progress_follows_each_layer_to_the_digest() {
        let mut p = Progress::default();
        let events = [
            json!({"status": "The push refers to repository [127.0.0.1:7060/web]"}),
            json!({"status": "Preparing", "progressDetail": {}, "id": "aaa"}),
            json!({"status": "Preparing", "progressDetail": {}, "id": "bbb"}),
            json!({"status": "Pushing", "progressDetail": {"current": 512, "total": 2048}, "id": "aaa"}),
            json!({"status": "Layer already exists", "progressDetail": {}, "id": "bbb"}),
            json!({"status": "Pushed", "progressDetail": {}, "id": "aaa"}),
            json!({"status": "1: digest: sha256:f00 size: 739", "id": "1"}),
            json!({"progressDetail": {}, "aux": {"Tag": "1", "Digest": "sha256:f00", "Size": 739}}),
        ];
        let changed: Vec<Option<String>> = events.iter().map(|e| p.apply(e).unwrap()).collect();
        assert_eq!(changed[0], None);
        assert_eq!(changed[3].as_deref(), Some("aaa"));
        assert_eq!(changed[6], None, "the tag's digest line is not a layer");
        assert_eq!(
            p.layers["aaa"],
            Layer {
                status: "Pushed".into(),
                current: 2048,
                total: 2048
            }
        );
        assert!(p.layers["bbb"].done());
        assert_eq!(p.layers.len(), 2);
        assert_eq!(p.digest.as_deref(), Some("sha256:f00"));
    }

    #[test]
    fn the_engines_error_ends_the_push() {
        let mut p = Progress::default();
        let e = json!({"errorDetail": {"message": "name unknown: repository web not found"},
                       "error": "name unknown: repository web not found"});
        assert_eq!(
            p.apply(&e).unwrap_err(),
            "name unknown: repository web not found"
        );
    }

    #[test]
    fn registry_auth_is_the_engines_json_in_url_safe_base64() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:s3cr?t>");
        let auth = registry_auth(Some(&token), "127.0.0.1:7060").unwrap();
        let json: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE
                .decode(auth)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            json,
            json!({"username": "AWS", "password": "s3cr?t>", "serveraddress": "127.0.0.1:7060"})
        );
        assert!(registry_auth(Some("!!"), "r").is_err());
    }
}
