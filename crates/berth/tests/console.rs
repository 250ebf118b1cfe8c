//! The web console: over HTTP (log in, sessions, CSRF, headers, bounded pages, no secret in a
//! page) against a real server; and in Debian's headless Chromium driven through the DevTools
//! protocol on real Docker: log in, create a task definition through the wizard (its live
//! preview included), run a task and watch it reach RUNNING, read its logs, create a service
//! and scale it, on a desktop and a phone-sized screen, with an accessibility pass (labels,
//! contrast, language, keyboard focus) over every page. Screenshots are saved under
//! `target/console-screenshots/` for a person to look at. The Chromium test needs Docker and
//! `chromium` (BERTH_SKIP_DOCKER=1 or BERTH_SKIP_CHROMIUM=1 skip it explicitly).

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{docker_available, docker_cleanup, wait_joined, TestAgent, TestServer, BUSYBOX};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::io::BufRead;
use std::time::{Duration, Instant};

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
    assert!(!p.text.contains(&s.secret_key), "no secret in a page");
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
    let p = http(
        &s,
        "POST",
        "/console/c/c000/s/web/scale",
        Some(&session),
        &[("desired_count", "3"), ("csrf", &token)],
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
        "/console/taskdefs/preview?family=hello&container_name=app&image=busybox&essential=on&container_memory=64",
        Some(&session),
        &[],
    )
    .await;
    let preview: Value = serde_json::from_str(&p.text).expect("the preview is JSON");
    assert_eq!(preview["family"], "hello");
    assert_eq!(preview["containerDefinitions"][0]["memory"], 64);
    let p = http(
        &s,
        "POST",
        "/console/taskdefs",
        Some(&session),
        &[
            ("family", "hello"),
            ("container_name", "app"),
            ("csrf", &token),
        ],
    )
    .await;
    assert_eq!(p.status, 200);
    assert!(
        p.text.contains("Image is required") && p.text.contains("value=\"hello\""),
        "{}",
        p.text
    );

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

/// Headless Chromium and one page of it, driven through the DevTools protocol.
struct Browser {
    child: std::process::Child,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(i) = line.find("ws://") {
                    let _ = tx.send(line[i..].to_string());
                }
            }
        });
        let browser_ws = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium says where its DevTools listen within 30 s");
        let port = browser_ws
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let list: Value = {
            let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
            use std::io::{Read, Write};
            write!(
                s,
                "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            // The answer has a Content-Length; the connection may stay open after it.
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut bytes = Vec::new();
            let mut buf = [0u8; 8192];
            let text = loop {
                let n = s.read(&mut buf).unwrap();
                bytes.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let complete = text.find("\r\n\r\n").is_some_and(|i| {
                    let len = text[..i]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok());
                    len.is_some_and(|len| bytes.len() >= i + 4 + len)
                });
                if n == 0 || complete {
                    break text;
                }
            };
            let body = text.find("\r\n\r\n").map(|i| &text[i + 4..]);
            serde_json::from_str(body.unwrap_or_default())
                .unwrap_or_else(|e| panic!("DevTools' /json/list ({e}): {text}"))
        };
        let page_ws = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target")["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .to_string();
        eprintln!("browser: DevTools on {page_ws}");
        let (ws, _) = tungstenite::connect(page_ws.as_str()).unwrap();
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
        let mut b = Browser {
            child,
            ws,
            next_id: 0,
            _profile: profile,
        };
        b.call("Page.enable", json!({}));
        b
    }

    /// One DevTools command and its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws
            .send(tungstenite::Message::text(
                json!({"id": id, "method": method, "params": params}).to_string(),
            ))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "{method}: no answer within 30 s");
            let msg = self.ws.read().unwrap();
            let Ok(text) = msg.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until the page has loaded (after a navigation or a form's submission).
    fn settle(&mut self) {
        std::thread::sleep(Duration::from_millis(200));
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.eval("document.readyState") != "complete" {
            assert!(
                Instant::now() < deadline,
                "the page did not load within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn goto(&mut self, url: &str) {
        eprintln!("browser: {url}");
        self.call("Page.navigate", json!({"url": url}));
        self.settle();
    }

    fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Polls the page (reloading it when `reload`) until its text holds `words`.
    fn wait_for(&mut self, words: &str, secs: u64, reload: bool) {
        eprintln!("browser: waiting for '{words}'");
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.text().contains(words) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "'{words}' did not appear within {secs} s; the page says:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_secs(1));
            if reload {
                self.call("Page.reload", json!({}));
                self.settle();
            }
        }
    }

    /// Saves a screenshot for people to look at.
    fn screenshot(&mut self, name: &str) {
        use base64::Engine;
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// The accessibility pass: every form control labelled, every image described, the page's
    /// language set, text contrast at least 4.5:1 (WCAG AA), and Tab reaching a control.
    fn check_accessible(&mut self, page: &str) {
        let problems = self.eval(A11Y_JS);
        assert_eq!(problems, json!([]), "accessibility problems on {page}");
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyDown", "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9}),
        );
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9}),
        );
        let focused = self.eval("document.activeElement ? document.activeElement.tagName : ''");
        assert!(
            ["A", "BUTTON", "INPUT", "SELECT", "TEXTAREA"]
                .contains(&focused.as_str().unwrap_or_default()),
            "Tab reaches a link or control on {page}, not {focused}"
        );
    }

    /// Fills a field by id.
    fn fill(&mut self, id: &str, value: &str) {
        let js = format!(
            "(function(){{var e=document.getElementById({id});e.value={value};e.dispatchEvent(new Event('input',{{bubbles:true}}));return true}})()",
            id = json!(id),
            value = json!(value)
        );
        assert_eq!(self.eval(&js), json!(true));
    }

    /// Submits the form with `selector`, as a click on its submit button would.
    fn submit(&mut self, selector: &str) {
        let js = format!(
            "(function(){{var f=document.querySelector({s});f.requestSubmit();return true}})()",
            s = json!(selector)
        );
        assert_eq!(self.eval(&js), json!(true));
        self.settle();
    }
}

const A11Y_JS: &str = r#"(function () {
  var out = [];
  if (!document.documentElement.lang) out.push('no lang on <html>');
  document.querySelectorAll('input:not([type=hidden]), select, textarea').forEach(function (e) {
    var labelled = (e.id && document.querySelector('label[for="' + e.id + '"]')) || e.getAttribute('aria-label');
    if (!labelled) out.push('unlabelled ' + e.tagName + ' ' + (e.name || ''));
  });
  document.querySelectorAll('img').forEach(function (e) { if (!e.hasAttribute('alt')) out.push('img without alt'); });
  document.querySelectorAll('button, a').forEach(function (e) { if (!e.textContent.trim() && !e.getAttribute('aria-label')) out.push('empty ' + e.tagName); });
  function rgb(c) { var m = c.match(/[\d.]+/g); return m ? m.map(Number) : [0, 0, 0, 0]; }
  function lum(c) { var a = [c[0], c[1], c[2]].map(function (v) { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }); return 0.2126 * a[0] + 0.7152 * a[1] + 0.0722 * a[2]; }
  function bg(e) { while (e) { var c = rgb(getComputedStyle(e).backgroundColor); if (c.length < 4 || c[3] > 0) return c; e = e.parentElement; } return [255, 255, 255]; }
  var walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  var seen = 0;
  while (walker.nextNode() && seen < 2000) {
    var n = walker.currentNode; if (!n.textContent.trim()) continue; seen++;
    var e = n.parentElement, fg = lum(rgb(getComputedStyle(e).color)), b = lum(bg(e));
    var ratio = (Math.max(fg, b) + 0.05) / (Math.min(fg, b) + 0.05);
    if (ratio < 4.5) out.push('contrast ' + ratio.toFixed(2) + ' for "' + n.textContent.trim().slice(0, 30) + '"');
  }
  return out;
})()"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_chromium_wizard_run_logs_service_and_scale_on_docker() {
    if !docker_available() || !chromium_available() {
        return;
    }
    let s = TestServer::start().await;
    s.spawn_service_loop();
    s.ok("CreateCluster", json!({"clusterName": "default"}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(&s, TestAgent::config(&s, dir.path())).await;
    let instance = wait_joined(&agent).await;
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
        b.wait_for("Clusters", 10, false);
        b.check_accessible("clusters");
        b.screenshot("02-clusters");

        // The wizard, its preview made by the server as the fields change.
        b.goto(&format!("{endpoint}/console/taskdefs/new"));
        b.fill("family", "hello");
        b.fill("container_name", "app");
        b.fill("image", BUSYBOX);
        b.fill("container_memory", "64");
        b.fill("command", "sh\n-c\necho hello from the console; sleep 600");
        b.wait_for("\"family\": \"hello\"", 10, false);
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
        assert!(
            b.text().contains("has reached a steady state"),
            "the events: {}",
            b.text()
        );
        b.check_accessible("service");
        b.screenshot("07-service");
        b.goto(&format!("{endpoint}/console/c/default"));
        b.check_accessible("cluster");
        b.screenshot("08-cluster");

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
