//! The web console: over HTTP (log in, sessions, CSRF, headers, bounded pages, no secret in a
//! page) against a real server; and in Debian's headless Chromium driven through the DevTools
//! protocol on real Docker: log in, create a task definition through the wizard (its live
//! preview included), run a task and watch it reach RUNNING, read its logs, create a service
//! and scale it, on a desktop and a phone-sized screen, with an accessibility pass (labels,
//! contrast, language, keyboard focus) over every page. Screenshots are saved under
//! `target/console-screenshots/` for a person to look at. The Chromium test needs Docker and
//! `chromium` (BERTH_SKIP_DOCKER=1 or BERTH_SKIP_CHROMIUM=1 skip it explicitly).

#![allow(clippy::unwrap_used)]

#[path = "../examples/common/browser.rs"]
mod browser;
mod common;

use browser::Browser;

use bytes::Bytes;
use common::{docker_available, docker_cleanup, TestServer, BUSYBOX};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::time::Duration;

/// One HTTP answer of the console.
#[derive(Debug)]
struct Page {
    status: u16,
    headers: http::HeaderMap,
    text: String,
}

impl Page {
    fn header(&self, name: &str) -> String {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn http(
    s: &TestServer,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> Page {
    http_with(s, method, path, cookie, form, &[]).await
}

/// The same with extra headers (`Origin`, `X-Forwarded-Proto`).
async fn http_with(
    s: &TestServer,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Page {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let body: String = form
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", s.endpoint))
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("an answer within 30 s")
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Page {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The CSRF token a page's forms carry.
fn csrf(page: &str) -> String {
    let i = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[i..i + page[i..].find('"').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_logins_sessions_csrf_and_bounded_pages_over_http() {
    let s = TestServer::start().await;
    // Unauthenticated: every page sends to the login page.
    let p = http(&s, "GET", "/", None, &[]).await;
    assert_eq!((p.status, p.header("location")), (303, "/console/".into()));
    let p = http(&s, "GET", "/console/", None, &[]).await;
    assert_eq!(
        (p.status, p.header("location")),
        (303, "/console/login".into())
    );
    let p = http(&s, "GET", "/console/login", None, &[]).await;
    assert_eq!(p.status, 200);
    assert!(
        p.text.contains("<label for=\"access_key_id\">"),
        "{}",
        p.text
    );
    assert!(p
        .header("content-security-policy")
        .contains("script-src 'self'"));
    assert_eq!(p.header("x-frame-options"), "DENY");

    // A wrong secret is refused; the right one opens a session in a safe cookie.
    let login = |secret: String| {
        let ak = s.access_key.clone();
        let s = &s;
        async move {
            http(
                s,
                "POST",
                "/console/login",
                None,
                &[("access_key_id", &ak), ("secret_access_key", &secret)],
            )
            .await
        }
    };
    let p = http_with(
        &s,
        "POST",
        "/console/login",
        None,
        &[
            ("access_key_id", &s.access_key),
            ("secret_access_key", &s.secret_key),
        ],
        &[("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(
        p.status, 403,
        "a login posted from another site is refused: {}",
        p.text
    );
    assert!(p.header("set-cookie").is_empty());
    let p = http_with(
        &s,
        "POST",
        "/console/login",
        None,
        &[
            ("access_key_id", &s.access_key),
            ("secret_access_key", &s.secret_key),
        ],
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert!(
        p.header("set-cookie").contains("; Secure"),
        "behind TLS the cookie is Secure"
    );
    let p = login("wrong".into()).await;
    assert_eq!(p.status, 401);
    assert!(p.text.contains("is not right"), "{}", p.text);
    let p = login(s.secret_key.clone()).await;
    assert_eq!((p.status, p.header("location")), (303, "/console/".into()));
    let cookie = p.header("set-cookie");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();

    // Pages: 120 clusters show as 100 rows and a link to the next page.
    for i in 0..120 {
        s.ok("CreateCluster", json!({"clusterName": format!("c{i:03}")}))
            .await;
    }
    let p = http(&s, "GET", "/console/", Some(&session), &[]).await;
    assert_eq!(p.status, 200);
    assert_eq!(
        p.text.matches("<a href=\"/console/c/c").count(),
        100,
        "100 rows a page"
    );
    assert!(p.text.contains("Next page"), "a link to the rest");
    let i = p
        .text
        .find("/console/?next=")
        .expect("the next page's link");
    let next = &p.text[i..i + p.text[i..].find('"').unwrap()];
    let rest = http(&s, "GET", &next.replace("&amp;", "&"), Some(&session), &[]).await;
    assert_eq!(
        rest.text.matches("<a href=\"/console/c/c").count(),
        20,
        "the other 20"
    );
    assert!(!rest.text.contains("Next page"));
    assert!(!p.text.contains(&s.secret_key), "no secret in a page");
    for page in [
        "/console/taskdefs",
        "/console/wizard",
        "/console/repos",
        "/console/c/c000",
    ] {
        let p = http(&s, "GET", page, Some(&session), &[]).await;
        assert_eq!(p.status, 200, "{page}: {}", p.text);
        assert!(!p.text.contains(&s.secret_key), "no secret in {page}");
    }
    let token = csrf(&p.text);

    // A form without its token, or from another site, is refused; with it, it acts.
    s.ok("RegisterTaskDefinition", common::task_def("web"))
        .await;
    s.ok(
        "CreateService",
        json!({"cluster": "c000", "serviceName": "web", "taskDefinition": "web", "desiredCount": 0}),
    )
    .await;
    let p = http(
        &s,
        "POST",
        "/console/c/c000/s/web/scale",
        Some(&session),
        &[("desired_count", "3")],
    )
    .await;
    assert_eq!(p.status, 403, "no CSRF token: {}", p.text);
    let p = http(
        &s,
        "POST",
        "/console/c/c000/s/web/scale",
        Some(&session),
        &[("desired_count", "3"), ("csrf", "forged")],
    )
    .await;
    assert_eq!(p.status, 403);
    let p = http_with(
        &s,
        "POST",
        "/console/c/c000/s/web/scale",
        Some(&session),
        &[("desired_count", "3"), ("csrf", &token)],
        &[("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(
        p.status, 403,
        "the right token from another site's page is refused"
    );
    let p = http_with(
        &s,
        "POST",
        "/console/c/c000/s/web/scale",
        Some(&session),
        &[("desired_count", "3"), ("csrf", &token)],
        &[
            ("origin", "https://berth.example"),
            ("x-forwarded-host", "berth.example"),
        ],
    )
    .await;
    assert_eq!(
        p.status, 303,
        "behind a proxy the Origin is the forwarded host: {}",
        p.text
    );
    let origin = s.endpoint.clone();
    let p = http_with(
        &s,
        "POST",
        "/console/c/c000/s/web/scale",
        Some(&session),
        &[("desired_count", "3"), ("csrf", &token)],
        &[("origin", &origin)],
    )
    .await;
    assert_eq!(
        (p.status, p.header("location")),
        (303, "/console/c/c000/s/web".into())
    );
    let v = s
        .ok(
            "DescribeServices",
            json!({"cluster": "c000", "services": ["web"]}),
        )
        .await;
    assert_eq!(
        v["services"][0]["desiredCount"], 3,
        "the action went through UpdateService"
    );

    // A new revision deployed from the service's page; its metrics say there are none yet.
    let p = http(&s, "GET", "/console/c/c000/s/web", Some(&session), &[]).await;
    assert!(
        p.text.contains("No figures yet"),
        "no Container Insights here: {}",
        p.text
    );
    s.ok("RegisterTaskDefinition", common::task_def("web"))
        .await;
    let p = http(
        &s,
        "POST",
        "/console/c/c000/s/web/deploy",
        Some(&session),
        &[("task_definition", "web:2"), ("csrf", &token)],
    )
    .await;
    assert_eq!(p.status, 303, "{}", p.text);
    let v = s
        .ok(
            "DescribeServices",
            json!({"cluster": "c000", "services": ["web"]}),
        )
        .await;
    assert!(
        v["services"][0]["taskDefinition"]
            .as_str()
            .unwrap()
            .ends_with("web:2"),
        "deployed through UpdateService: {v:#}"
    );

    // A service of task sets shows them, and no Deploy form: its tool deploys it.
    s.ok(
        "CreateService",
        json!({"cluster": "c000", "serviceName": "ext", "desiredCount": 1,
               "deploymentController": {"type": "EXTERNAL"}}),
    )
    .await;
    let set = s
        .ok(
            "CreateTaskSet",
            json!({"cluster": "c000", "service": "ext", "taskDefinition": "web:1",
                   "externalId": "blue-7"}),
        )
        .await;
    let p = http(&s, "GET", "/console/c/c000/s/ext", Some(&session), &[]).await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert!(
        p.text.contains("Task sets")
            && p.text.contains("blue-7")
            && p.text.contains(set["taskSet"]["id"].as_str().unwrap()),
        "the task set's row: {}",
        p.text
    );
    assert!(
        !p.text.contains("<legend>Deploy</legend>"),
        "no Deploy form for an EXTERNAL service: {}",
        p.text
    );

    // Errors are the API's own words, with its status.
    let p = http(
        &s,
        "POST",
        "/console/c/c000/s/nope/scale",
        Some(&session),
        &[("desired_count", "1"), ("csrf", &token)],
    )
    .await;
    assert_eq!(p.status, 400, "{}", p.text);
    assert!(p.text.contains("ServiceNotFoundException"), "{}", p.text);
    let p = http(&s, "GET", "/console/c/nope", Some(&session), &[]).await;
    assert!(
        p.text
            .contains("ClusterNotFoundException: Cluster not found."),
        "{}",
        p.text
    );
    let p = http(&s, "GET", "/console/no/such/page", Some(&session), &[]).await;
    assert_eq!(p.status, 404);

    // The wizard's preview is the request the form makes; a bad form keeps what was typed.
    let p = http(
        &s,
        "GET",
        "/console/wizard/preview?family=hello&ec2=on&container_name=app&image=busybox&essential=on&container_memory=64",
        Some(&session),
        &[],
    )
    .await;
    assert!(
        p.header("content-type").starts_with("text/plain"),
        "never read as HTML"
    );
    let preview: Value = serde_json::from_str(&p.text).expect("the preview is JSON");
    assert_eq!(preview["family"], "hello");
    assert_eq!(preview["containerDefinitions"][0]["memory"], 64);
    let p = http(
        &s,
        "POST",
        "/console/wizard",
        Some(&session),
        &[
            ("family", "<b>hello</b>"),
            ("ec2", "on"),
            ("container_name", "app"),
            ("submitted", "1"),
            ("csrf", &token),
        ],
    )
    .await;
    assert_eq!(p.status, 400);
    assert!(
        p.text.contains("Image is required")
            && p.text.contains("value=\"&lt;b&gt;hello&lt;/b&gt;\""),
        "the error, and what was typed kept, escaped: {}",
        p.text
    );
    assert!(
        !p.text.contains("<b>hello"),
        "no markup from a form reaches a page"
    );
    let p = http(
        &s,
        "POST",
        "/console/wizard",
        Some(&session),
        &[
            ("family", "bad name!"),
            ("ec2", "on"),
            ("container_name", "app"),
            ("image", "busybox"),
            ("container_memory", "64"),
            ("submitted", "1"),
            ("csrf", &token),
        ],
    )
    .await;
    assert_eq!(
        p.status, 400,
        "the API's refusal, with its status: {}",
        p.text
    );
    assert!(p.text.contains("ClientException"), "{}", p.text);

    // Logging out ends the session.
    let p = http(
        &s,
        "POST",
        "/console/logout",
        Some(&session),
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(p.status, 303);
    let p = http(&s, "GET", "/console/", Some(&session), &[]).await;
    assert_eq!(p.header("location"), "/console/login");
    s.stop().await;
}

// ------------------------------------------------------------------ Chromium

fn chromium_available() -> bool {
    if std::env::var("BERTH_SKIP_CHROMIUM").as_deref() == Ok("1") {
        eprintln!("BERTH_SKIP_CHROMIUM=1: skipping the console's Chromium test");
        return false;
    }
    let ok = std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "Debian's chromium is not installed (scripts/test installs it; BERTH_SKIP_CHROMIUM=1 skips this test)"
    );
    ok
}

/// The id of the service page's primary deployment (the Deployments table's first row).
const DEPLOYMENT_JS: &str = "(function(){var t=[].find.call(document.querySelectorAll('table'),\
function(t){return t.caption&&t.caption.textContent=='Deployments'});\
var c=t&&t.querySelector('tbody tr td');return c?c.textContent:''})()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_chromium_wizard_run_logs_service_and_scale_on_docker() {
    if !docker_available() || !chromium_available() {
        return;
    }
    let s = TestServer::start().await;
    s.spawn_service_loop();
    let (agent, instance, _dir) = common::insights_agent(&s, "enabled").await;
    let endpoint = s.endpoint.clone();
    let (ak, sk) = (s.access_key.clone(), s.secret_key.clone());

    // The browser is blocking; it runs on a thread of its own while the server serves.
    let run = tokio::task::spawn_blocking(move || {
        let mut b = Browser::start();
        b.goto(&format!("{endpoint}/console/"));
        assert!(
            b.text().contains("Log in"),
            "sent to the login page: {}",
            b.text()
        );
        b.check_accessible("login");
        b.screenshot("01-login");
        b.fill("access_key_id", &ak);
        b.fill("secret_access_key", &sk);
        b.submit("form[action='/console/login']");
        b.wait_for("Log out", 10, false);
        b.check_accessible("clusters");
        b.screenshot("02-clusters");

        // The wizard, its preview made by the server as the fields change.
        b.goto(&format!("{endpoint}/console/wizard"));
        b.fill("family", "hello");
        b.fill("container_name", "app");
        b.fill("image", BUSYBOX);
        b.fill("container_memory", "64");
        b.fill("command", "sh\n-c\necho hello from the console; sleep 600");
        // A second container: a sidecar beside the app.
        b.fill("container_name_2", "sidecar");
        b.fill("image_2", BUSYBOX);
        b.fill("container_memory_2", "32");
        b.fill("command_2", "sleep\n600");
        b.wait_for("\"family\": \"hello\"", 10, false);
        b.wait_for("\"name\": \"sidecar\"", 10, false);
        assert!(
            b.text().contains("\"awslogs-group\": \"/ecs/hello\""),
            "log collection is on by default"
        );
        b.check_accessible("wizard");
        b.screenshot("03-wizard");
        b.submit("#wizard");
        b.wait_for("Task definition hello:1", 10, false);
        b.check_accessible("task definition");
        b.screenshot("04-taskdef");

        // Run a task and watch it reach RUNNING (the page reloads itself until it settles).
        b.submit("form[action='/console/c/default/run']");
        b.wait_for("Status RUNNING", 90, false);
        assert!(
            b.text().contains("sidecar"),
            "both containers run: {}",
            b.text()
        );
        b.check_accessible("task");
        b.screenshot("05-task");
        let logs = format!("{}/logs", b.eval("location.pathname").as_str().unwrap());
        b.goto(&format!("{endpoint}{logs}"));
        b.wait_for("hello from the console", 60, true);
        b.goto(&format!("{endpoint}{logs}?live=1"));
        let text = b.text();
        assert!(
            text.contains("reloads every 5 s") && text.contains("hello from the console"),
            "following a running task's logs: {text}"
        );
        b.check_accessible("logs");
        b.screenshot("06-logs");
        b.goto(&format!("{endpoint}{logs}?q=bad-pattern"));
        assert!(
            b.text()
                .contains("InvalidParameterException: Invalid filter pattern"),
            "a bad search says why, in the page: {}",
            b.text()
        );
        b.goto(&format!("{endpoint}{logs}?q=nothingmatchesthis"));
        assert!(
            b.text().contains("No lines yet."),
            "a search that matches nothing: {}",
            b.text()
        );
        b.goto(&format!("{endpoint}{logs}?q=console"));
        assert!(
            b.text().contains("hello from the console"),
            "a search that matches"
        );
        // Stop the task from its page.
        b.goto(&format!("{endpoint}{}", logs.trim_end_matches("/logs")));
        b.submit("form[action$='/stop']");
        b.wait_for("Status STOPPED", 60, false);
        assert!(b.text().contains("Stopped in the console"), "{}", b.text());

        // A service, scaled from the console.
        b.goto(&format!(
            "{endpoint}/console/c/default/services/new?task_definition=hello:1"
        ));
        b.fill("service_name", "web");
        b.check_accessible("new service");
        b.submit("form[action='/console/c/default/services']");
        b.wait_for("running 1", 90, false);
        b.fill("desired_count", "2");
        b.submit("form[action$='/scale']");
        b.wait_for("running 2", 90, false);
        // Its metrics, from Container Insights.
        b.wait_for("Running tasks: latest", 90, true);
        // A forced deployment from the service's page: a new primary deployment rolls out.
        let first = b.eval(DEPLOYMENT_JS);
        assert_eq!(
            b.eval("(function(){document.getElementById('force').checked=true;return true})()"),
            json!(true)
        );
        b.submit("form[action$='/deploy']");
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let now = b.eval(DEPLOYMENT_JS);
            let text = b.text();
            if now != first && text.contains("COMPLETED") && !text.contains("IN_PROGRESS") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the forced deployment did not complete: {text}"
            );
            std::thread::sleep(Duration::from_secs(1));
            b.goto(&format!("{endpoint}/console/c/default/s/web"));
        }
        b.check_accessible("service");
        b.screenshot("07-service");
        b.goto(&format!("{endpoint}/console/c/default"));
        b.check_accessible("cluster");
        b.screenshot("08-cluster");
        for (page, name) in [
            ("/console/taskdefs", "task definitions"),
            ("/console/repos", "repositories"),
            ("/console/no/such/page", "not found"),
        ] {
            b.goto(&format!("{endpoint}{page}"));
            b.check_accessible(name);
        }

        // A phone-sized screen: the page does not scroll sideways (tables scroll in their box).
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
        );
        b.goto(&format!("{endpoint}/console/c/default/s/web"));
        let wide = b.eval("document.documentElement.scrollWidth");
        assert!(
            wide.as_f64().unwrap() <= 390.0,
            "the page is {wide} px wide on a 390 px screen"
        );
        b.screenshot("09-service-phone");

        // Drain the instance from the cluster's page.
        b.call("Emulation.clearDeviceMetricsOverride", json!({}));
        b.goto(&format!("{endpoint}/console/c/default"));
        b.submit("form[action$='/drain']");
        b.wait_for("DRAINING", 30, false);
    });
    tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser's walk ends within 5 minutes")
        .unwrap();
    let v = s
        .ok(
            "DescribeServices",
            json!({"cluster": "default", "services": ["web"]}),
        )
        .await;
    assert_eq!(v["services"][0]["desiredCount"], 2);
    s.ok(
        "DeleteService",
        json!({"cluster": "default", "service": "web", "force": true}),
    )
    .await;
    agent.stop().await;
    docker_cleanup(&instance);
    s.stop().await;
}
