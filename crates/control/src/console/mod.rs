//! The web console, served by the server under `/console/`: server-rendered HTML with one
//! small script (the wizard's live preview). Every page reads, and every action writes, through
//! the same operation handlers as the API ([`Control::handle`], `handle_logs`, the registry's
//! `handle_ecr`) as the logged-in key's caller: there is no second path to the store.
//!
//! Logging in takes an access key id and its secret (checked against the store as SigV4 checks
//! them; agents' keys are refused); the session is a random id in an `HttpOnly`,
//! `SameSite=Strict` cookie (`Secure` behind TLS), kept in this server's memory for 12 hours.
//! Every form carries the session's CSRF token and every POST is checked against it (and
//! against the `Origin` header when the browser sends one). Pages never hold a secret, are
//! sent with a strict Content-Security-Policy, and list at most 100 rows a section, with a
//! link to the next page.

mod html;
pub mod wizard;

use crate::{Caller, Control};
use berth_api::ecs::{self, EcsRequest};
use berth_api::{EcsError, ErrorKind};
use html::{a, button, csrf_field, esc, seg, table, Frame};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const COOKIE: &str = "berth_console";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest go first.
const MAX_SESSIONS: usize = 10_000;
/// Rows a section shows before its "next page" link.
const PAGE_ROWS: i32 = 100;

#[derive(Debug)]
struct Session {
    access_key: String,
    csrf: String,
    expires: Instant,
}

/// The console's sessions.
#[derive(Debug, Default)]
pub struct Console {
    sessions: Mutex<HashMap<String, Session>>,
}

/// What the HTTP layer hands over.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub cookie: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub host: Option<&'a str>,
    /// `X-Forwarded-Host`, set by a proxy in front.
    pub forwarded_host: Option<&'a str>,
    /// The request came through TLS (`X-Forwarded-Proto: https`).
    pub https: bool,
    pub body: &'a [u8],
}

/// What the HTTP layer sends back.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn html(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: "text/html; charset=utf-8",
            body: body.into_bytes(),
            headers: Vec::new(),
        }
    }

    fn redirect(to: &str) -> Reply {
        Reply {
            status: 303,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
            headers: vec![("location", to.to_string())],
        }
    }
}

/// The logged-in user of one request.
struct Who {
    caller: Caller,
    key: crate::auth::AccessKey,
    csrf: String,
}

/// A page's outcome: a page, or a redirect after an action.
enum Out {
    Page(String),
    /// Plain text (the wizard's preview), never read as HTML.
    Text(String),
    /// A page that reports a refused form (what was typed kept), with its status.
    Refused(u16, String),
    Redirect(String),
}

type Pairs = BTreeMap<String, String>;

fn pairs(bytes: &[u8]) -> Pairs {
    berth_api::query::decode_form(bytes)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// A path segment's percent-escapes decoded (`+`, `&` and `=` are themselves).
fn decode_segment(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares secrets without an early exit.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn cookie_session(header: Option<&str>) -> Option<&str> {
    header?
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

impl Console {
    fn session(&self, id: &str) -> Option<(String, String)> {
        let mut s = self.sessions.lock().ok()?;
        let now = Instant::now();
        match s.get(id) {
            Some(x) if x.expires > now => Some((x.access_key.clone(), x.csrf.clone())),
            Some(_) => {
                s.remove(id);
                None
            }
            None => None,
        }
    }

    fn open(&self, access_key: &str) -> String {
        let id = crate::auth::random_secret(40);
        let csrf = crate::auth::random_secret(40);
        if let Ok(mut s) = self.sessions.lock() {
            let now = Instant::now();
            s.retain(|_, x| x.expires > now);
            if s.len() >= MAX_SESSIONS {
                if let Some(oldest) = s
                    .iter()
                    .min_by_key(|(_, x)| x.expires)
                    .map(|(k, _)| k.clone())
                {
                    s.remove(&oldest);
                }
            }
            s.insert(
                id.clone(),
                Session {
                    access_key: access_key.to_string(),
                    csrf,
                    expires: now + SESSION_TTL,
                },
            );
        }
        id
    }

    fn close(&self, id: &str) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(id);
        }
    }
}

fn static_reply(content_type: &'static str, body: &str) -> Reply {
    Reply {
        status: 200,
        content_type,
        body: body.as_bytes().to_vec(),
        headers: vec![("cache-control", "max-age=300".into())],
    }
}

/// The wizard's live preview: the form's fields go to `/console/wizard/preview` (the same
/// Rust function that registers them makes the JSON) and the answer fills the preview.
const APP_JS: &str = r#"document.addEventListener('DOMContentLoaded', function () {
  var form = document.getElementById('wizard');
  var out = document.getElementById('preview');
  if (!form || !out) return;
  var timer = null;
  function update() {
    var q = new URLSearchParams(new FormData(form));
    q.delete('csrf');
    fetch('/console/wizard/preview?' + q.toString(), {credentials: 'same-origin'})
      .then(function (r) { return r.text(); })
      .then(function (t) { out.textContent = t; });
  }
  form.addEventListener('input', function () { clearTimeout(timer); timer = setTimeout(update, 150); });
  update();
});
"#;

impl Control {
    /// Serves one console request.
    pub async fn console(&self, console: &Console, req: Request<'_>) -> Reply {
        let mut reply = self.console_inner(console, &req).await;
        reply.headers.extend([
            (
                "content-security-policy",
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'".to_string(),
            ),
            ("x-frame-options", "DENY".to_string()),
            ("referrer-policy", "same-origin".to_string()),
            ("x-content-type-options", "nosniff".to_string()),
        ]);
        if !reply.headers.iter().any(|(k, _)| *k == "cache-control") {
            reply
                .headers
                .push(("cache-control", "no-store".to_string()));
        }
        reply
    }

    async fn console_inner(&self, console: &Console, req: &Request<'_>) -> Reply {
        let path = req.path.trim_end_matches('/');
        match (req.method, path) {
            ("GET", "" | "/console") if req.path.len() <= 1 => return Reply::redirect("/console/"),
            ("GET", "/console/style.css") => return static_reply("text/css", html::STYLE),
            ("GET", "/console/app.js") => return static_reply("text/javascript", APP_JS),
            ("GET", "/console/login") => return login_page(None, 200),
            ("POST", "/console/login") => return self.login(console, req).await,
            _ => {}
        }
        let Some(session_id) = cookie_session(req.cookie) else {
            return Reply::redirect("/console/login");
        };
        let Some((access_key, csrf)) = console.session(session_id) else {
            return Reply::redirect("/console/login");
        };
        let key = match self.access_key(&access_key).await {
            Ok(Some(k)) if k.instance.is_none() => k,
            _ => {
                console.close(session_id);
                return Reply::redirect("/console/login");
            }
        };
        let who = Who {
            caller: Caller::from(&key),
            key,
            csrf,
        };
        let form = if req.method == "POST" {
            let form = pairs(req.body);
            let token_ok = form.get("csrf").is_some_and(|t| same(t, &who.csrf));
            let origin_ok = same_origin(req);
            if !token_ok || !origin_ok {
                return Reply::html(
                    403,
                    html::page(
                        &Frame {
                            title: "Refused",
                            error: Some("The form is stale or came from another site (CSRF check failed). Reload the page and try again.".into()),
                            csrf: Some(&who.csrf),
                            ..Default::default()
                        },
                        "",
                    ),
                );
            }
            if path == "/console/logout" {
                console.close(session_id);
                let mut r = Reply::redirect("/console/login");
                r.headers.push((
                    "set-cookie",
                    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
                ));
                return r;
            }
            form
        } else {
            pairs(req.query.as_bytes())
        };
        let segments: Vec<String> = path
            .trim_start_matches("/console")
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode_segment)
            .collect();
        let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
        let result = self.route(&who, req.method, &parts, &form).await;
        match result {
            Ok(Out::Page(body)) => Reply::html(200, body),
            Ok(Out::Text(text)) => Reply {
                status: 200,
                content_type: "text/plain; charset=utf-8",
                body: text.into_bytes(),
                headers: Vec::new(),
            },
            Ok(Out::Refused(status, body)) => Reply::html(status, body),
            Ok(Out::Redirect(to)) => Reply::redirect(&to),
            Err(Failure::NotFound) => Reply::html(
                404,
                html::page(
                    &Frame {
                        title: "Not found",
                        csrf: Some(&who.csrf),
                        error: Some(format!("No page at {}", req.path)),
                        ..Default::default()
                    },
                    "",
                ),
            ),
            Err(Failure::Api(e, title)) => Reply::html(
                e.kind.http_status(),
                html::page(
                    &Frame {
                        title: &title,
                        csrf: Some(&who.csrf),
                        error: Some(format!("{}: {}", e.kind.wire_name(), e.message)),
                        ..Default::default()
                    },
                    "<p><a href=\"/console/\">Clusters</a></p>",
                ),
            ),
        }
    }

    async fn login(&self, console: &Console, req: &Request<'_>) -> Reply {
        // No session yet, so no token: the Origin check alone keeps other sites from logging
        // a browser in under their key.
        if !same_origin(req) {
            return login_page(
                Some("The form came from another site. Open this page and log in here.".into()),
                403,
            );
        }
        let form = pairs(req.body);
        let id = form
            .get("access_key_id")
            .map(|s| s.trim())
            .unwrap_or_default();
        let secret = form
            .get("secret_access_key")
            .map(|s| s.trim())
            .unwrap_or_default();
        let known = match self.access_key(id).await {
            Ok(k) => k,
            Err(e) => return login_page(Some(e.message), 500),
        };
        match known {
            Some(k) if k.instance.is_none() && same(&k.secret_access_key, secret) => {
                let session = console.open(&k.access_key_id);
                let secure = if req.https { "; Secure" } else { "" };
                let mut r = Reply::redirect("/console/");
                r.headers.push((
                    "set-cookie",
                    format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict{secure}"),
                ));
                r
            }
            _ => login_page(
                Some("The access key id or secret access key is not right.".into()),
                401,
            ),
        }
    }
}

/// Whether a POST comes from this console's own pages: the browser's `Origin` (sent with
/// every form POST) names the host the request was sent to (`X-Forwarded-Host` behind a
/// proxy). A request without an Origin (not a browser's form) passes; its CSRF token is
/// still checked.
fn same_origin(req: &Request<'_>) -> bool {
    let host = req.forwarded_host.or(req.host);
    match (req.origin, host) {
        (Some(o), Some(h)) => o.split_once("://").map(|(_, rest)| rest) == Some(h),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn login_page(error: Option<String>, status: u16) -> Reply {
    let body = "<form method=\"post\" action=\"/console/login\">\
<label for=\"access_key_id\">Access key id</label><input id=\"access_key_id\" name=\"access_key_id\" autocomplete=\"username\" required>\
<label for=\"secret_access_key\">Secret access key</label><input id=\"secret_access_key\" name=\"secret_access_key\" type=\"password\" autocomplete=\"current-password\" required>\
<p><button type=\"submit\">Log in</button></p></form>\
<p>The key is one the server knows: the export lines <code>berth up</code> printed, or its data dir's <code>credentials</code>.</p>";
    Reply::html(
        status,
        html::page(
            &Frame {
                title: "Log in",
                error,
                ..Default::default()
            },
            body,
        ),
    )
}

enum Failure {
    NotFound,
    Api(EcsError, String),
}

impl From<EcsError> for Failure {
    fn from(e: EcsError) -> Failure {
        Failure::Api(e, "Error".into())
    }
}

type Res<T> = Result<T, Failure>;

/// One ECS operation through the API's own handler, its typed answer.
async fn op<T: serde::de::DeserializeOwned>(c: &Control, who: &Who, req: EcsRequest) -> Res<T> {
    let bytes = c.handle(&who.caller, req).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Failure::Api(
            EcsError::server(format!("an answer did not parse: {e}")),
            "Error".into(),
        )
    })
}

fn num(v: Option<&String>, what: &str) -> Res<i32> {
    v.and_then(|s| s.trim().parse().ok()).ok_or_else(|| {
        Failure::Api(
            EcsError::new(
                ErrorKind::InvalidParameter,
                format!("{what} must be a whole number"),
            ),
            "Error".into(),
        )
    })
}

fn short(arn: Option<&str>) -> String {
    arn.map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_else(|| "-".into())
}

fn cell<T: ToString>(v: Option<T>) -> String {
    esc(&v.map(|v| v.to_string()).unwrap_or_else(|| "-".into()))
}

fn when(t: Option<f64>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t as i64).ok())
        .and_then(|d| {
            d.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| "-".into())
}

/// A "next page" link for a section when the listing has more.
fn next_link(base: &str, param: &str, token: Option<&String>) -> String {
    match token.filter(|t| !t.is_empty()) {
        Some(t) => format!(
            "<p>{}</p>",
            a(&format!("{base}?{param}={}", seg(t)), "Next page")
        ),
        None => String::new(),
    }
}

impl Control {
    async fn route(&self, who: &Who, method: &str, p: &[&str], f: &Pairs) -> Res<Out> {
        match (method, p) {
            ("GET", []) => self.clusters_page(who, f).await,
            ("GET", ["c", c]) => self.cluster_page(who, c, f).await,
            ("GET", ["c", c, "s", s]) => self.service_page(who, c, s, f).await,
            ("POST", ["c", c, "s", s, "scale"]) => {
                let n = num(f.get("desired_count"), "Desired count")?;
                let _: ecs::UpdateServiceResponse = op(
                    self,
                    who,
                    EcsRequest::UpdateService(ecs::UpdateServiceRequest {
                        cluster: Some(c.to_string()),
                        service: Some(s.to_string()),
                        desired_count: Some(n),
                        ..Default::default()
                    }),
                )
                .await?;
                Ok(Out::Redirect(format!("/console/c/{}/s/{}", seg(c), seg(s))))
            }
            ("POST", ["c", c, "s", s, "deploy"]) => {
                let _: ecs::UpdateServiceResponse = op(
                    self,
                    who,
                    EcsRequest::UpdateService(ecs::UpdateServiceRequest {
                        cluster: Some(c.to_string()),
                        service: Some(s.to_string()),
                        task_definition: f
                            .get("task_definition")
                            .cloned()
                            .filter(|t| !t.is_empty()),
                        force_new_deployment: Some(f.contains_key("force")),
                        ..Default::default()
                    }),
                )
                .await?;
                Ok(Out::Redirect(format!("/console/c/{}/s/{}", seg(c), seg(s))))
            }
            ("GET", ["c", c, "services", "new"]) => self.new_service_page(who, c, f).await,
            ("POST", ["c", c, "services"]) => {
                let name = f.get("service_name").cloned().unwrap_or_default();
                let _: ecs::CreateServiceResponse = op(
                    self,
                    who,
                    EcsRequest::CreateService(ecs::CreateServiceRequest {
                        cluster: Some(c.to_string()),
                        service_name: Some(name.clone()),
                        task_definition: f.get("task_definition").cloned(),
                        desired_count: Some(num(f.get("desired_count"), "Desired count")?),
                        launch_type: f.get("launch_type").cloned().filter(|l| !l.is_empty()),
                        ..Default::default()
                    }),
                )
                .await?;
                Ok(Out::Redirect(format!(
                    "/console/c/{}/s/{}",
                    seg(c),
                    seg(&name)
                )))
            }
            ("GET", ["c", c, "t", t]) => self.task_page(who, c, t).await,
            ("GET", ["c", c, "t", t, "logs"]) => self.logs_page(who, c, t, f).await,
            ("POST", ["c", c, "t", t, "stop"]) => {
                let _: ecs::StopTaskResponse = op(
                    self,
                    who,
                    EcsRequest::StopTask(ecs::StopTaskRequest {
                        cluster: Some(c.to_string()),
                        task: Some(t.to_string()),
                        reason: Some("Stopped in the console".into()),
                    }),
                )
                .await?;
                Ok(Out::Redirect(format!("/console/c/{}/t/{}", seg(c), seg(t))))
            }
            ("POST", ["c", c, "i", i, "drain"]) => {
                let _: ecs::UpdateContainerInstancesStateResponse = op(
                    self,
                    who,
                    EcsRequest::UpdateContainerInstancesState(
                        ecs::UpdateContainerInstancesStateRequest {
                            cluster: Some(c.to_string()),
                            container_instances: Some(vec![i.to_string()]),
                            status: Some("DRAINING".into()),
                        },
                    ),
                )
                .await?;
                Ok(Out::Redirect(format!("/console/c/{}", seg(c))))
            }
            ("POST", ["c", c, "run"]) => {
                let r: ecs::RunTaskResponse = op(
                    self,
                    who,
                    EcsRequest::RunTask(ecs::RunTaskRequest {
                        cluster: Some(c.to_string()),
                        task_definition: f.get("task_definition").cloned(),
                        count: Some(num(f.get("count"), "Count")?),
                        launch_type: f.get("launch_type").cloned().filter(|l| !l.is_empty()),
                        started_by: Some("console".into()),
                        ..Default::default()
                    }),
                )
                .await?;
                let first = r.tasks.iter().flatten().find_map(|t| t.task_arn.clone());
                match first {
                    Some(arn) => Ok(Out::Redirect(format!(
                        "/console/c/{}/t/{}",
                        seg(c),
                        seg(&short(Some(&arn)))
                    ))),
                    None => {
                        let why: Vec<String> = r
                            .failures
                            .iter()
                            .flatten()
                            .map(|x| {
                                format!(
                                    "{} {}",
                                    x.reason.clone().unwrap_or_default(),
                                    x.detail.clone().unwrap_or_default()
                                )
                            })
                            .collect();
                        Err(Failure::Api(
                            EcsError::new(
                                ErrorKind::Client,
                                format!("no task could be placed: {}", why.join("; ")),
                            ),
                            "Run task".into(),
                        ))
                    }
                }
            }
            ("GET", ["taskdefs"]) => self.taskdefs_page(who, f).await,
            ("GET", ["wizard"]) => Ok(Out::Page(self.wizard_page(who, f, None))),
            ("GET", ["wizard", "preview"]) => {
                Ok(Out::Text(match wizard::request(f, &self.config.region) {
                    Ok(r) => serde_json::to_string_pretty(&r).unwrap_or_default(),
                    Err(e) => format!("Not yet a task definition: {e}"),
                }))
            }
            ("POST", ["wizard"]) => match wizard::request(f, &self.config.region) {
                Err(e) => Ok(Out::Refused(400, self.wizard_page(who, f, Some(e)))),
                Ok(r) => {
                    let answer = op::<ecs::RegisterTaskDefinitionResponse>(
                        self,
                        who,
                        EcsRequest::RegisterTaskDefinition(r),
                    )
                    .await;
                    match answer {
                        Ok(r) => {
                            let arn = r.task_definition.and_then(|t| t.task_definition_arn);
                            Ok(Out::Redirect(format!(
                                "/console/taskdefs/{}",
                                seg(&short(arn.as_deref()))
                            )))
                        }
                        Err(Failure::Api(e, _)) => Ok(Out::Refused(
                            e.kind.http_status(),
                            self.wizard_page(
                                who,
                                f,
                                Some(format!("{}: {}", e.kind.wire_name(), e.message)),
                            ),
                        )),
                        Err(e) => Err(e),
                    }
                }
            },
            ("GET", ["taskdefs", td]) => self.taskdef_page(who, td).await,
            ("GET", ["repos"]) => self.repos_page(who, None, f).await,
            ("GET", ["repos", r]) => self.repos_page(who, Some(r), f).await,
            _ => Err(Failure::NotFound),
        }
    }

    async fn clusters_page(&self, who: &Who, f: &Pairs) -> Res<Out> {
        let list: ecs::ListClustersResponse = op(
            self,
            who,
            EcsRequest::ListClusters(ecs::ListClustersRequest {
                max_results: Some(PAGE_ROWS),
                next_token: f.get("next").cloned(),
            }),
        )
        .await?;
        let arns = list.cluster_arns.clone().unwrap_or_default();
        let clusters: ecs::DescribeClustersResponse = op(
            self,
            who,
            EcsRequest::DescribeClusters(ecs::DescribeClustersRequest {
                clusters: Some(arns),
                include: None,
            }),
        )
        .await?;
        let rows: Vec<Vec<String>> = clusters
            .clusters
            .iter()
            .flatten()
            .map(|c| {
                let name = c.cluster_name.clone().unwrap_or_default();
                vec![
                    a(&format!("/console/c/{}", seg(&name)), &name),
                    cell(c.status.as_deref()),
                    cell(c.registered_container_instances_count),
                    cell(c.active_services_count),
                    cell(c.running_tasks_count),
                    cell(c.pending_tasks_count),
                ]
            })
            .collect();
        let body = table(
            "Clusters",
            &[
                "Name",
                "Status",
                "Instances",
                "Services",
                "Running tasks",
                "Pending tasks",
            ],
            &rows,
        ) + &next_link("/console/", "next", list.next_token.as_ref());
        Ok(Out::Page(html::page(
            &Frame {
                title: "Clusters",
                csrf: Some(&who.csrf),
                ..Default::default()
            },
            &body,
        )))
    }

    async fn cluster_page(&self, who: &Who, c: &str, f: &Pairs) -> Res<Out> {
        let base = format!("/console/c/{}", seg(c));
        let cl: ecs::DescribeClustersResponse = op(
            self,
            who,
            EcsRequest::DescribeClusters(ecs::DescribeClustersRequest {
                clusters: Some(vec![c.to_string()]),
                include: None,
            }),
        )
        .await?;
        if cl.clusters.as_ref().is_none_or(Vec::is_empty) {
            return Err(Failure::Api(
                EcsError::new(ErrorKind::ClusterNotFound, "Cluster not found."),
                c.to_string(),
            ));
        }
        // Services, 10 described a call.
        let services: ecs::ListServicesResponse = op(
            self,
            who,
            EcsRequest::ListServices(ecs::ListServicesRequest {
                cluster: Some(c.to_string()),
                max_results: Some(PAGE_ROWS),
                next_token: f.get("services").cloned(),
                ..Default::default()
            }),
        )
        .await?;
        let mut rows = Vec::new();
        for chunk in services.service_arns.clone().unwrap_or_default().chunks(10) {
            let d: ecs::DescribeServicesResponse = op(
                self,
                who,
                EcsRequest::DescribeServices(ecs::DescribeServicesRequest {
                    cluster: Some(c.to_string()),
                    services: Some(chunk.to_vec()),
                    include: None,
                }),
            )
            .await?;
            for s in d.services.iter().flatten() {
                let name = s.service_name.clone().unwrap_or_default();
                rows.push(vec![
                    a(&format!("{base}/s/{}", seg(&name)), &name),
                    cell(s.status.as_deref()),
                    cell(s.desired_count),
                    cell(s.running_count),
                    cell(s.pending_count),
                    esc(&short(s.task_definition.as_deref())),
                ]);
            }
        }
        let mut body = format!(
            "<p>{} · {}</p>",
            a(&format!("{base}/services/new"), "Create a service"),
            a("/console/taskdefs", "Run a task (from a task definition)")
        );
        body += &table(
            "Services",
            &[
                "Name",
                "Status",
                "Desired",
                "Running",
                "Pending",
                "Task definition",
            ],
            &rows,
        );
        body += &next_link(&base, "services", services.next_token.as_ref());
        // Tasks.
        let tasks: ecs::ListTasksResponse = op(
            self,
            who,
            EcsRequest::ListTasks(ecs::ListTasksRequest {
                cluster: Some(c.to_string()),
                max_results: Some(PAGE_ROWS),
                next_token: f.get("tasks").cloned(),
                ..Default::default()
            }),
        )
        .await?;
        let described = self
            .tasks_of(who, c, tasks.task_arns.clone().unwrap_or_default())
            .await?;
        body += &task_table(c, &described, true);
        body += &next_link(&base, "tasks", tasks.next_token.as_ref());
        // Container instances.
        let instances: ecs::ListContainerInstancesResponse = op(
            self,
            who,
            EcsRequest::ListContainerInstances(ecs::ListContainerInstancesRequest {
                cluster: Some(c.to_string()),
                max_results: Some(PAGE_ROWS),
                next_token: f.get("instances").cloned(),
                ..Default::default()
            }),
        )
        .await?;
        let arns = instances
            .container_instance_arns
            .clone()
            .unwrap_or_default();
        let mut rows = Vec::new();
        if !arns.is_empty() {
            let d: ecs::DescribeContainerInstancesResponse = op(
                self,
                who,
                EcsRequest::DescribeContainerInstances(ecs::DescribeContainerInstancesRequest {
                    cluster: Some(c.to_string()),
                    container_instances: Some(arns),
                    include: None,
                }),
            )
            .await?;
            for i in d.container_instances.iter().flatten() {
                let id = short(i.container_instance_arn.as_deref());
                let res = |list: &Option<Vec<ecs::Resource>>, n: &str| {
                    list.iter()
                        .flatten()
                        .find(|r| r.name.as_deref() == Some(n))
                        .and_then(|r| r.integer_value)
                };
                let used = |n: &str| match (
                    res(&i.registered_resources, n),
                    res(&i.remaining_resources, n),
                ) {
                    (Some(all), Some(free)) => format!("{} of {all}", all - free),
                    _ => "-".into(),
                };
                let drain = if i.status.as_deref() == Some("ACTIVE") {
                    button(&format!("{base}/i/{}/drain", seg(&id)), "Drain", &who.csrf)
                } else {
                    String::new()
                };
                rows.push(vec![
                    cell(i.ec2_instance_id.as_deref()),
                    cell(i.status.as_deref()),
                    if i.agent_connected == Some(true) {
                        "connected".into()
                    } else {
                        "disconnected".into()
                    },
                    cell(i.running_tasks_count),
                    esc(&used("CPU")),
                    esc(&used("MEMORY")),
                    drain,
                ]);
            }
        }
        body += &table(
            "Container instances",
            &[
                "Instance",
                "Status",
                "Agent",
                "Running tasks",
                "CPU reserved",
                "Memory reserved (MiB)",
                "Action",
            ],
            &rows,
        );
        body += &next_link(&base, "instances", instances.next_token.as_ref());
        Ok(Out::Page(html::page(
            &Frame {
                title: &format!("Cluster {c}"),
                crumbs: vec![("Clusters".into(), "/console/".into())],
                csrf: Some(&who.csrf),
                ..Default::default()
            },
            &body,
        )))
    }

    async fn tasks_of(&self, who: &Who, c: &str, arns: Vec<String>) -> Res<Vec<ecs::Task>> {
        let mut out = Vec::new();
        for chunk in arns.chunks(100) {
            let d: ecs::DescribeTasksResponse = op(
                self,
                who,
                EcsRequest::DescribeTasks(ecs::DescribeTasksRequest {
                    cluster: Some(c.to_string()),
                    tasks: Some(chunk.to_vec()),
                    include: None,
                }),
            )
            .await?;
            out.extend(d.tasks.unwrap_or_default());
        }
        Ok(out)
    }

    async fn service_page(&self, who: &Who, c: &str, s: &str, f: &Pairs) -> Res<Out> {
        let base = format!("/console/c/{}", seg(c));
        let d: ecs::DescribeServicesResponse = op(
            self,
            who,
            EcsRequest::DescribeServices(ecs::DescribeServicesRequest {
                cluster: Some(c.to_string()),
                services: Some(vec![s.to_string()]),
                include: None,
            }),
        )
        .await?;
        let Some(svc) = d.services.unwrap_or_default().pop() else {
            return Err(Failure::Api(
                EcsError::new(ErrorKind::ServiceNotFound, "Service not found."),
                format!("Service {s}"),
            ));
        };
        let deployments = svc.deployments.clone().unwrap_or_default();
        let live = deployments.len() > 1
            || svc.pending_count.unwrap_or(0) > 0
            || svc.running_count != svc.desired_count;
        let mut body = format!(
            "<p>Status {} · desired {} · running {} · pending {} · task definition {}</p>",
            cell(svc.status.as_deref()),
            cell(svc.desired_count),
            cell(svc.running_count),
            cell(svc.pending_count),
            a(
                &format!(
                    "/console/taskdefs/{}",
                    seg(&short(svc.task_definition.as_deref()))
                ),
                &short(svc.task_definition.as_deref())
            ),
        );
        let _ = write!(
            body,
            "<form method=\"post\" action=\"{base}/s/{}/scale\">{}<label for=\"desired_count\">Desired count</label>\
<input id=\"desired_count\" name=\"desired_count\" inputmode=\"numeric\" value=\"{}\"> <button type=\"submit\">Update</button></form>",
            seg(s),
            csrf_field(&who.csrf),
            cell(svc.desired_count)
        );
        // A service of task sets is deployed by the tool that drives them, not from here.
        let task_sets = crate::task_sets::uses_task_sets(&svc);
        if task_sets {
            let rows: Vec<Vec<String>> = svc
                .task_sets
                .iter()
                .flatten()
                .map(|t| {
                    vec![
                        cell(t.id.as_deref()),
                        cell(t.status.as_deref()),
                        cell(t.external_id.as_deref()),
                        esc(&short(t.task_definition.as_deref())),
                        cell(t.scale.as_ref().and_then(|x| x.value)),
                        cell(t.computed_desired_count),
                        cell(t.running_count),
                        cell(t.pending_count),
                        cell(t.stability_status.as_deref()),
                    ]
                })
                .collect();
            let _ = write!(
                body,
                "<p>Deployment controller {}: deployments are the task sets a blue/green tool creates (CreateTaskSet, UpdateServicePrimaryTaskSet).</p>",
                esc(crate::task_sets::controller(&svc))
            );
            body += &table(
                "Task sets",
                &[
                    "Id",
                    "Status",
                    "External id",
                    "Task definition",
                    "Scale %",
                    "Desired",
                    "Running",
                    "Pending",
                    "Stability",
                ],
                &rows,
            );
        }
        let rows: Vec<Vec<String>> = deployments
            .iter()
            .map(|d| {
                vec![
                    cell(d.id.as_deref()),
                    cell(d.status.as_deref()),
                    esc(&short(d.task_definition.as_deref())),
                    cell(d.desired_count),
                    cell(d.running_count),
                    cell(d.pending_count),
                    cell(d.failed_tasks),
                    cell(d.rollout_state.as_deref()),
                    cell(d.rollout_state_reason.as_deref()),
                ]
            })
            .collect();
        if !task_sets {
            body += &table(
                "Deployments",
                &[
                    "Id",
                    "Status",
                    "Task definition",
                    "Desired",
                    "Running",
                    "Pending",
                    "Failed",
                    "Rollout",
                    "Reason",
                ],
                &rows,
            );
        }
        let lbs: Vec<Vec<String>> = svc
            .load_balancers
            .iter()
            .flatten()
            .map(|l| {
                vec![
                    cell(l.target_group_arn.as_deref()),
                    cell(l.container_name.as_deref()),
                    cell(l.container_port),
                ]
            })
            .collect();
        if !lbs.is_empty() {
            body += &table(
                "Load balancers",
                &["Target group", "Container", "Port"],
                &lbs,
            );
            body += &self.target_health(who, &svc).await;
        }
        body += &self.charts(who, c, s).await;
        if !task_sets {
            let _ = write!(
            body,
            "<form method=\"post\" action=\"{base}/s/{}/deploy\">{}<fieldset><legend>Deploy</legend>\
<label for=\"deploy_td\">Task definition (family or family:revision)</label>\
<input id=\"deploy_td\" name=\"task_definition\" value=\"{}\">\
<p><input type=\"checkbox\" id=\"force\" name=\"force\"><label for=\"force\" class=\"inline\"> Force a new deployment (replace every task even if nothing changed)</label></p>\
<p><button type=\"submit\">Deploy</button></p></fieldset></form>",
            seg(s),
            csrf_field(&who.csrf),
            esc(&short(svc.task_definition.as_deref()))
        );
        }
        let tasks: ecs::ListTasksResponse = op(
            self,
            who,
            EcsRequest::ListTasks(ecs::ListTasksRequest {
                cluster: Some(c.to_string()),
                service_name: svc.service_name.clone(),
                max_results: Some(PAGE_ROWS),
                next_token: f.get("tasks").cloned(),
                ..Default::default()
            }),
        )
        .await?;
        let described = self
            .tasks_of(who, c, tasks.task_arns.clone().unwrap_or_default())
            .await?;
        body += &task_table(c, &described, false);
        body += &next_link(
            &format!("{base}/s/{}", seg(s)),
            "tasks",
            tasks.next_token.as_ref(),
        );
        let events: Vec<Vec<String>> = svc
            .events
            .iter()
            .flatten()
            .take(50)
            .map(|e| vec![esc(&when(e.created_at)), cell(e.message.as_deref())])
            .collect();
        body += &table("Events (newest first)", &["Time", "Message"], &events);
        Ok(Out::Page(html::page(
            &Frame {
                title: &format!("Service {s}"),
                crumbs: vec![
                    ("Clusters".into(), "/console/".into()),
                    (c.to_string(), base.clone()),
                ],
                refresh: live.then_some(5),
                csrf: Some(&who.csrf),
                ..Default::default()
            },
            &body,
        )))
    }

    /// The health of each target of the service's target groups, as DescribeTargetHealth
    /// answers it.
    async fn target_health(&self, who: &Who, svc: &ecs::Service) -> String {
        let mut rows = Vec::new();
        for tg in svc
            .load_balancers
            .iter()
            .flatten()
            .filter_map(|l| l.target_group_arn.clone())
        {
            let answer = self
                .handle_elb(
                    &who.caller,
                    berth_api::elbv2::ElbRequest::DescribeTargetHealth(
                        berth_api::elbv2::DescribeTargetHealthInput {
                            target_group_arn: Some(tg.clone()),
                            ..Default::default()
                        },
                    ),
                )
                .await;
            let out: berth_api::elbv2::DescribeTargetHealthOutput = match answer {
                Ok(v) => serde_json::from_value(v).unwrap_or_default(),
                Err(e) => {
                    rows.push(vec![
                        esc(&short(Some(&tg))),
                        "-".into(),
                        "-".into(),
                        esc(&format!("{}: {}", e.kind.wire_name(), e.message)),
                    ]);
                    continue;
                }
            };
            for d in out.target_health_descriptions.iter().flatten() {
                let target = d.target.clone().unwrap_or_default();
                let health = d.target_health.clone().unwrap_or_default();
                rows.push(vec![
                    esc(&short(Some(&tg))),
                    esc(&format!(
                        "{}:{}",
                        target.id.unwrap_or_default(),
                        cell(target.port)
                    )),
                    cell(health.state.as_deref()),
                    esc(&[health.reason, health.description]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(": ")),
                ]);
            }
        }
        table(
            "Target health",
            &["Target group", "Target", "State", "Reason"],
            &rows,
        )
    }

    /// The service's last hour from Container Insights: CPU and memory used per task and its
    /// running task count, a minute a point.
    async fn charts(&self, who: &Who, c: &str, s: &str) -> String {
        use berth_api::cloudwatch::{
            Dimension, GetMetricDataInput, GetMetricDataOutput, Metric, MetricDataQuery, MetricStat,
        };
        let figures = [
            ("cpu", "CpuUtilized", "CPU used per task (units)"),
            ("memory", "MemoryUtilized", "Memory used per task (MiB)"),
            ("running", "RunningTaskCount", "Running tasks"),
        ];
        let now = crate::now_millis() as f64 / 1000.0;
        let queries = figures
            .iter()
            .map(|(id, name, _)| MetricDataQuery {
                id: Some(id.to_string()),
                metric_stat: Some(MetricStat {
                    metric: Some(Metric {
                        namespace: Some("ECS/ContainerInsights".into()),
                        metric_name: Some(name.to_string()),
                        dimensions: Some(vec![
                            Dimension {
                                name: Some("ClusterName".into()),
                                value: Some(c.to_string()),
                            },
                            Dimension {
                                name: Some("ServiceName".into()),
                                value: Some(s.to_string()),
                            },
                        ]),
                    }),
                    period: Some(60),
                    stat: Some("Average".into()),
                    unit: None,
                }),
                return_data: Some(true),
                ..Default::default()
            })
            .collect();
        let answer = self
            .handle_cloudwatch(
                &who.caller,
                berth_api::cloudwatch::CloudWatchRequest::GetMetricData(GetMetricDataInput {
                    metric_data_queries: Some(queries),
                    start_time: Some((now - 3600.0).floor()),
                    end_time: Some(now.ceil() + 60.0),
                    ..Default::default()
                }),
                crate::cloudwatch::Wire::Json,
            )
            .await;
        let out: GetMetricDataOutput = match answer {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(e) => return format!("<h2>Metrics</h2><p>No figures: {}</p>", esc(&e.message)),
        };
        let mut h = String::from("<h2>Metrics (last hour, a minute a point)</h2>");
        let mut any = false;
        for (id, _, label) in figures {
            let r = out
                .metric_data_results
                .iter()
                .flatten()
                .find(|r| r.id.as_deref() == Some(id));
            let mut points: Vec<(f64, f64)> = r
                .map(|r| {
                    r.timestamps
                        .iter()
                        .flatten()
                        .copied()
                        .zip(r.values.iter().flatten().copied())
                        .collect()
                })
                .unwrap_or_default();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            any |= !points.is_empty();
            h += &html::chart(label, &points);
        }
        if !any {
            h = "<h2>Metrics</h2><p>No figures yet: the cluster's Container Insights are off, or no sample has arrived.</p>".into();
        }
        h
    }

    async fn task_page(&self, who: &Who, c: &str, t: &str) -> Res<Out> {
        let base = format!("/console/c/{}", seg(c));
        let mut tasks = self.tasks_of(who, c, vec![t.to_string()]).await?;
        let Some(task) = tasks.pop() else {
            return Err(Failure::Api(
                EcsError::new(
                    ErrorKind::InvalidParameter,
                    format!("The task {t} was not found."),
                ),
                format!("Task {t}"),
            ));
        };
        let settled = matches!(task.last_status.as_deref(), Some("RUNNING" | "STOPPED"))
            && task.last_status == task.desired_status;
        let mut body = format!(
            "<p>Status {} (desired {}) · health {} · task definition {} · group {} · started {}</p>",
            cell(task.last_status.as_deref()),
            cell(task.desired_status.as_deref()),
            cell(task.health_status.as_deref()),
            a(
                &format!("/console/taskdefs/{}", seg(&short(task.task_definition_arn.as_deref()))),
                &short(task.task_definition_arn.as_deref())
            ),
            cell(task.group.as_deref()),
            esc(&when(task.started_at)),
        );
        if let Some(reason) = &task.stopped_reason {
            let _ = write!(body, "<p>Stopped: {}</p>", esc(reason));
        }
        let _ = write!(
            body,
            "<p>{}",
            a(&format!("{base}/t/{}/logs", seg(t)), "Logs")
        );
        if task.desired_status.as_deref() != Some("STOPPED") {
            body += " · ";
            body += &button(&format!("{base}/t/{}/stop", seg(t)), "Stop task", &who.csrf);
        }
        body += "</p>";
        let rows: Vec<Vec<String>> = task
            .containers
            .iter()
            .flatten()
            .map(|k| {
                let ports: Vec<String> = k
                    .network_bindings
                    .iter()
                    .flatten()
                    .map(|b| format!("{}->{}", cell(b.host_port), cell(b.container_port)))
                    .collect();
                vec![
                    cell(k.name.as_deref()),
                    cell(k.image.as_deref()),
                    cell(k.last_status.as_deref()),
                    cell(k.health_status.as_deref()),
                    cell(k.exit_code),
                    esc(&ports.join(", ")),
                    cell(k.reason.as_deref()),
                ]
            })
            .collect();
        body += &table(
            "Containers",
            &[
                "Name",
                "Image",
                "Status",
                "Health",
                "Exit code",
                "Ports",
                "Reason",
            ],
            &rows,
        );
        Ok(Out::Page(html::page(
            &Frame {
                title: &format!("Task {t}"),
                crumbs: vec![
                    ("Clusters".into(), "/console/".into()),
                    (c.to_string(), base.clone()),
                ],
                refresh: (!settled).then_some(3),
                csrf: Some(&who.csrf),
                ..Default::default()
            },
            &body,
        )))
    }

    async fn logs_page(&self, who: &Who, c: &str, t: &str, f: &Pairs) -> Res<Out> {
        let base = format!("/console/c/{}", seg(c));
        let mut tasks = self.tasks_of(who, c, vec![t.to_string()]).await?;
        let task = tasks.pop().ok_or(Failure::NotFound)?;
        let td: ecs::DescribeTaskDefinitionResponse = op(
            self,
            who,
            EcsRequest::DescribeTaskDefinition(ecs::DescribeTaskDefinitionRequest {
                task_definition: task.task_definition_arn.clone(),
                include: None,
            }),
        )
        .await?;
        let q = f.get("q").cloned().unwrap_or_default();
        let live = f.contains_key("live") && task.last_status.as_deref() != Some("STOPPED");
        let mut body = format!(
            "<form method=\"get\" action=\"{base}/t/{}/logs\"><label for=\"q\">Search (a CloudWatch Logs filter pattern)</label>\
<input id=\"q\" name=\"q\" value=\"{}\"> <button type=\"submit\">Search</button></form><p>{}</p>",
            seg(t),
            esc(&q),
            if live {
                a(&format!("{base}/t/{}/logs?q={}", seg(t), seg(&q)), "Stop following")
            } else {
                a(
                    &format!("{base}/t/{}/logs?live=1&q={}", seg(t), seg(&q)),
                    "Follow (reload every 5 s)",
                )
            }
        );
        let task_id = short(task.task_arn.as_deref());
        for def in td
            .task_definition
            .iter()
            .flat_map(|d| d.container_definitions.iter().flatten())
        {
            let name = def.name.clone().unwrap_or_default();
            let options = def
                .log_configuration
                .as_ref()
                .filter(|l| l.log_driver.as_deref() == Some("awslogs"))
                .and_then(|l| l.options.clone());
            let Some(options) = options else {
                let _ = write!(
                    body,
                    "<h2>{}</h2><p>This container does not send its logs to CloudWatch Logs.</p>",
                    esc(&name)
                );
                continue;
            };
            let runtime_id = task
                .containers
                .iter()
                .flatten()
                .find(|k| k.name.as_deref() == Some(&name))
                .and_then(|k| k.runtime_id.as_deref());
            let stream = berth_api::logs::awslogs_stream(&options, &name, &task_id, runtime_id)
                .unwrap_or_default();
            let group = options.get("awslogs-group").cloned().unwrap_or_default();
            let answer = self
                .handle_logs(
                    &who.caller,
                    berth_api::logs::LogsRequest::FilterLogEvents(
                        berth_api::logs::FilterLogEventsRequest {
                            log_group_name: Some(group.clone()),
                            log_stream_names: Some(vec![stream.clone()]),
                            filter_pattern: (!q.is_empty()).then(|| q.clone()),
                            // The newest 500, newest first; shown oldest first below.
                            start_from_head: Some(false),
                            limit: Some(500),
                            ..Default::default()
                        },
                    ),
                )
                .await;
            let _ = write!(
                body,
                "<h2>{} <small>({} / {})</small></h2>",
                esc(&name),
                esc(&group),
                esc(&stream)
            );
            match answer {
                Ok(bytes) => {
                    let r: berth_api::logs::FilterLogEventsResponse =
                        serde_json::from_slice(&bytes).unwrap_or_default();
                    let mut lines: Vec<String> = r
                        .events
                        .iter()
                        .flatten()
                        .map(|e| esc(e.message.as_deref().unwrap_or_default()))
                        .collect();
                    lines.reverse();
                    if lines.is_empty() {
                        body += "<p>No lines yet.</p>";
                    } else {
                        let _ = write!(body, "<pre>{}</pre>", lines.join("\n"));
                    }
                }
                Err(e) if e.kind == ErrorKind::ResourceNotFound => body += "<p>No lines yet.</p>",
                // A bad pattern, a group not made yet: said here, the rest of the page stays.
                Err(e) => {
                    let _ = write!(
                        body,
                        "<p class=\"error\" role=\"alert\">Error: {}: {}</p>",
                        e.kind.wire_name(),
                        esc(&e.message)
                    );
                }
            }
        }
        Ok(Out::Page(html::page(
            &Frame {
                title: &format!("Logs of task {t}"),
                refresh: live.then_some(5),
                crumbs: vec![
                    ("Clusters".into(), "/console/".into()),
                    (c.to_string(), base.clone()),
                    (format!("Task {t}"), format!("{base}/t/{}", seg(t))),
                ],
                csrf: Some(&who.csrf),
                ..Default::default()
            },
            &body,
        )))
    }

    async fn new_service_page(&self, who: &Who, c: &str, f: &Pairs) -> Res<Out> {
        let body = format!(
            "<form method=\"post\" action=\"/console/c/{}/services\">{}\
<label for=\"service_name\">Service name</label><input id=\"service_name\" name=\"service_name\" required>\
<label for=\"task_definition\">Task definition (family or family:revision)</label><input id=\"task_definition\" name=\"task_definition\" required value=\"{}\">\
<label for=\"desired_count\">Desired count</label><input id=\"desired_count\" name=\"desired_count\" inputmode=\"numeric\" value=\"1\">\
<label for=\"launch_type\">Launch type</label><select id=\"launch_type\" name=\"launch_type\"><option value=\"\">The cluster's default</option><option>EC2</option><option>EXTERNAL</option></select>\
<p><button type=\"submit\">Create service</button></p></form>",
            seg(c),
            csrf_field(&who.csrf),
            esc(f.get("task_definition").map(String::as_str).unwrap_or_default())
        );
        Ok(Out::Page(html::page(
            &Frame {
                title: &format!("New service in {c}"),
                crumbs: vec![
                    ("Clusters".into(), "/console/".into()),
                    (c.to_string(), format!("/console/c/{}", seg(c))),
                ],
                csrf: Some(&who.csrf),
                ..Default::default()
            },
            &body,
        )))
    }

    async fn taskdefs_page(&self, who: &Who, f: &Pairs) -> Res<Out> {
        let list: ecs::ListTaskDefinitionFamiliesResponse = op(
            self,
            who,
            EcsRequest::ListTaskDefinitionFamilies(ecs::ListTaskDefinitionFamiliesRequest {
                status: Some("ACTIVE".into()),
                max_results: Some(PAGE_ROWS),
                next_token: f.get("next").cloned(),
                ..Default::default()
            }),
        )
        .await?;
        let rows: Vec<Vec<String>> = list
            .families
            .iter()
            .flatten()
            .map(|fam| vec![a(&format!("/console/taskdefs/{}", seg(fam)), fam)])
            .collect();
        let body = format!(
            "<p>{}</p>",
            a("/console/wizard", "Create a new task definition")
        ) + &table(
            "Task definition families",
            &["Family (latest revision)"],
            &rows,
        ) + &next_link("/console/taskdefs", "next", list.next_token.as_ref());
        Ok(Out::Page(html::page(
            &Frame {
                title: "Task definitions",
                csrf: Some(&who.csrf),
                ..Default::default()
            },
            &body,
        )))
    }

    fn wizard_page(&self, who: &Who, f: &Pairs, error: Option<String>) -> String {
        html::page(
            &Frame {
                title: "New task definition",
                crumbs: vec![("Task definitions".into(), "/console/taskdefs".into())],
                error,
                csrf: Some(&who.csrf),
                ..Default::default()
            },
            &wizard::form(f, &who.csrf),
        )
    }

    async fn taskdef_page(&self, who: &Who, td: &str) -> Res<Out> {
        let d: ecs::DescribeTaskDefinitionResponse = op(
            self,
            who,
            EcsRequest::DescribeTaskDefinition(ecs::DescribeTaskDefinitionRequest {
                task_definition: Some(td.to_string()),
                include: Some(vec!["TAGS".into()]),
            }),
        )
        .await?;
        let def = d.task_definition.clone().unwrap_or_default();
        let name = format!(
            "{}:{}",
            def.family.clone().unwrap_or_default(),
            cell(def.revision)
        );
        let clusters: ecs::ListClustersResponse = op(
            self,
            who,
            EcsRequest::ListClusters(ecs::ListClustersRequest {
                max_results: Some(PAGE_ROWS),
                next_token: None,
            }),
        )
        .await?;
        let mut options = String::new();
        for arn in clusters.cluster_arns.iter().flatten() {
            let c = short(Some(arn));
            let _ = write!(options, "<option>{}</option>", esc(&c));
        }
        let mut body = String::new();
        for c in clusters
            .cluster_arns
            .iter()
            .flatten()
            .map(|a| short(Some(a)))
        {
            let _ = write!(
                body,
                "<form method=\"post\" action=\"/console/c/{}/run\">{}<input type=\"hidden\" name=\"task_definition\" value=\"{}\">\
<fieldset><legend>Run in cluster {}</legend><label for=\"count-{}\">Count</label><input id=\"count-{}\" name=\"count\" inputmode=\"numeric\" value=\"1\">\
<label for=\"lt-{}\">Launch type</label><select id=\"lt-{}\" name=\"launch_type\"><option value=\"\">The cluster's default</option><option>EC2</option><option>EXTERNAL</option></select>\
<p><button type=\"submit\">Run task in {}</button> {}</p></fieldset></form>",
                seg(&c),
                csrf_field(&who.csrf),
                esc(&name),
                esc(&c),
                esc(&c),
                esc(&c),
                esc(&c),
                esc(&c),
                esc(&c),
                a(
                    &format!("/console/c/{}/services/new?task_definition={}", seg(&c), seg(&name)),
                    &format!("Create a service in {c}")
                ),
            );
        }
        let _ = write!(
            body,
            "<h2>JSON</h2><pre>{}</pre>",
            esc(&serde_json::to_string_pretty(&d).unwrap_or_default())
        );
        Ok(Out::Page(html::page(
            &Frame {
                title: &format!("Task definition {name}"),
                crumbs: vec![("Task definitions".into(), "/console/taskdefs".into())],
                csrf: Some(&who.csrf),
                ..Default::default()
            },
            &body,
        )))
    }

    async fn repos_page(&self, who: &Who, repo: Option<&str>, f: &Pairs) -> Res<Out> {
        let Some(registry) = self.registry.clone() else {
            return Err(Failure::Api(
                EcsError::new(
                    ErrorKind::UnknownOperation,
                    "this server runs no image registry",
                ),
                "Repositories".into(),
            ));
        };
        let principal: berth_registry::Principal = who.key.clone().into();
        let (title, body) = match repo {
            None => {
                let bytes = registry
                    .handle_ecr(
                        &principal,
                        berth_api::ecr::EcrRequest::DescribeRepositories(
                            berth_api::ecr::DescribeRepositoriesRequest {
                                max_results: Some(PAGE_ROWS),
                                next_token: f.get("next").cloned(),
                                ..Default::default()
                            },
                        ),
                    )
                    .await?;
                let r: berth_api::ecr::DescribeRepositoriesResponse =
                    serde_json::from_slice(&bytes).unwrap_or_default();
                let rows: Vec<Vec<String>> = r
                    .repositories
                    .iter()
                    .flatten()
                    .map(|x| {
                        let n = x.repository_name.clone().unwrap_or_default();
                        vec![
                            a(&format!("/console/repos/{}", seg(&n)), &n),
                            cell(x.repository_uri.as_deref()),
                            cell(x.image_tag_mutability.as_deref()),
                        ]
                    })
                    .collect();
                (
                    "Repositories".to_string(),
                    table("Repositories", &["Name", "URI", "Tag mutability"], &rows)
                        + &next_link("/console/repos", "next", r.next_token.as_ref()),
                )
            }
            Some(name) => {
                let bytes = registry
                    .handle_ecr(
                        &principal,
                        berth_api::ecr::EcrRequest::DescribeImages(
                            berth_api::ecr::DescribeImagesRequest {
                                repository_name: Some(name.to_string()),
                                max_results: Some(PAGE_ROWS),
                                next_token: f.get("next").cloned(),
                                ..Default::default()
                            },
                        ),
                    )
                    .await?;
                let r: berth_api::ecr::DescribeImagesResponse =
                    serde_json::from_slice(&bytes).unwrap_or_default();
                let rows: Vec<Vec<String>> = r
                    .image_details
                    .iter()
                    .flatten()
                    .map(|i| {
                        vec![
                            esc(&i.image_tags.clone().unwrap_or_default().join(", ")),
                            cell(i.image_digest.as_deref()),
                            cell(i.image_size_in_bytes),
                            esc(&when(i.image_pushed_at)),
                        ]
                    })
                    .collect();
                (
                    format!("Repository {name}"),
                    table(
                        "Images",
                        &["Tags", "Digest", "Size (bytes)", "Pushed"],
                        &rows,
                    ) + &next_link(
                        &format!("/console/repos/{}", seg(name)),
                        "next",
                        r.next_token.as_ref(),
                    ),
                )
            }
        };
        Ok(Out::Page(html::page(
            &Frame {
                title: &title,
                crumbs: vec![("Repositories".into(), "/console/repos".into())],
                csrf: Some(&who.csrf),
                ..Default::default()
            },
            &body,
        )))
    }
}

fn task_table(c: &str, tasks: &[ecs::Task], with_group: bool) -> String {
    let base = format!("/console/c/{}", seg(c));
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let id = short(t.task_arn.as_deref());
            let mut row = vec![
                a(&format!("{base}/t/{}", seg(&id)), &id),
                esc(&short(t.task_definition_arn.as_deref())),
            ];
            if with_group {
                row.push(cell(t.group.as_deref()));
            }
            row.extend([
                cell(t.last_status.as_deref()),
                cell(t.desired_status.as_deref()),
                cell(t.health_status.as_deref()),
                esc(&when(t.started_at)),
            ]);
            row
        })
        .collect();
    let mut header = vec!["Task", "Task definition"];
    if with_group {
        header.push("Group");
    }
    header.extend(["Status", "Desired", "Health", "Started"]);
    table("Tasks", &header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        assert_eq!(
            cookie_session(Some("a=1; berth_console=xyz; b=2")),
            Some("xyz")
        );
        assert_eq!(cookie_session(Some("a=1")), None);
        assert_eq!(cookie_session(None), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
        assert_eq!(decode_segment("web%3A3"), "web:3");
        assert_eq!(decode_segment("a+b"), "a+b", "a plus in a path is a plus");
        assert_eq!(decode_segment("a&b=c"), "a&b=c");
        assert_eq!(
            decode_segment("bad%zz%4"),
            "bad%zz%4",
            "broken escapes stay as they are"
        );
    }
}
