//! Headless Chromium (Debian's `chromium`) driven through the DevTools protocol, for the web
//! console's tests and `bench/run ui`: start it, navigate, evaluate, fill and submit forms,
//! wait for text, take screenshots, time page loads, and an accessibility pass.
#![allow(dead_code, clippy::unwrap_used)]

use serde_json::{json, Value};
use std::io::BufRead;
use std::time::{Duration, Instant};

/// Headless Chromium and one page of it, driven through the DevTools protocol.
pub struct Browser {
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

impl Browser {
    pub fn start() -> Browser {
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
    pub fn call(&mut self, method: &str, params: Value) -> Value {
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
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    /// Evaluates `js`, or None when the page is between documents (a reload or a form's
    /// answer arriving destroys the context an evaluation runs in).
    pub fn try_eval(&mut self, js: &str) -> Option<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let params = json!({"expression": js, "returnByValue": true, "awaitPromise": true});
        self.ws
            .send(tungstenite::Message::text(
                json!({"id": id, "method": "Runtime.evaluate", "params": params}).to_string(),
            ))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                Instant::now() < deadline,
                "Runtime.evaluate: no answer within 30 s"
            );
            let msg = self.ws.read().unwrap();
            let Ok(text) = msg.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or_default();
            if v["id"] == id {
                let r = &v["result"];
                if v.get("error").is_some() || r.get("exceptionDetails").is_some() {
                    return None;
                }
                return Some(r["result"]["value"].clone());
            }
        }
    }

    /// The current document's identity (its time origin): it changes with every load.
    fn document(&mut self) -> Option<f64> {
        self.try_eval("performance.timeOrigin")
            .and_then(|v| v.as_f64())
    }

    /// Waits until a document other than `before` has loaded completely.
    fn settle_after(&mut self, before: Option<f64>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.document();
            if now.is_some()
                && now != before
                && self.try_eval("document.readyState") == Some(json!("complete"))
            {
                return;
            }
            assert!(Instant::now() < deadline, "no new page loaded within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the page has loaded completely.
    pub fn settle(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.try_eval("document.readyState") != Some(json!("complete")) {
            assert!(
                Instant::now() < deadline,
                "the page did not load within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn goto(&mut self, url: &str) {
        eprintln!("browser: {url}");
        let before = self.document();
        self.call("Page.navigate", json!({"url": url}));
        self.settle_after(before);
    }

    /// The page's text ("" while the page is between documents).
    pub fn text(&mut self) -> String {
        self.try_eval("document.body ? document.body.innerText : ''")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Polls the page (reloading it when `reload`) until its text holds `words`.
    pub fn wait_for(&mut self, words: &str, secs: u64, reload: bool) {
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
                let before = self.document();
                self.call("Page.reload", json!({}));
                self.settle_after(before);
            }
        }
    }

    /// Saves a screenshot for people to look at.
    pub fn screenshot(&mut self, name: &str) {
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
    pub fn check_accessible(&mut self, page: &str) {
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
        let focused = self.eval(
            "(function(){var e=document.activeElement;if(!e)return '';var s=getComputedStyle(e);\
             return e.tagName+(s.outlineStyle!=='none'&&parseFloat(s.outlineWidth)>=2?' visible':' hidden')})()",
        );
        let focused = focused.as_str().unwrap_or_default().to_string();
        assert!(
            ["A", "BUTTON", "INPUT", "SELECT", "TEXTAREA"]
                .iter()
                .any(|t| focused == format!("{t} visible")),
            "Tab reaches a link or control on {page}, with a visible focus outline: {focused}"
        );
    }

    /// Logs in to the console at `endpoint` with a key, as a person would.
    pub fn login(&mut self, endpoint: &str, access_key: &str, secret: &str) {
        self.goto(&format!("{endpoint}/console/login"));
        self.fill("access_key_id", access_key);
        self.fill("secret_access_key", secret);
        self.submit("form[action='/console/login']");
        // Only a logged-in page has the log-out button.
        self.wait_for("Log out", 10, false);
    }

    /// The last navigation's time to its first byte and to the end of its load event, in ms
    /// (the browser's Navigation Timing).
    pub fn load_times(&mut self) -> (f64, f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.eval(
                "(function(){var n=performance.getEntriesByType('navigation')[0];\
                 return n?[n.responseStart-n.startTime,n.loadEventEnd-n.startTime]:[0,0]})()",
            );
            let (ttfb, done) = (v[0].as_f64().unwrap_or(0.0), v[1].as_f64().unwrap_or(0.0));
            if done > 0.0 {
                return (ttfb, done);
            }
            assert!(
                Instant::now() < deadline,
                "the page did not finish loading within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fills a field by id.
    pub fn fill(&mut self, id: &str, value: &str) {
        let js = format!(
            "(function(){{var e=document.getElementById({id});e.value={value};e.dispatchEvent(new Event('input',{{bubbles:true}}));return true}})()",
            id = json!(id),
            value = json!(value)
        );
        assert_eq!(self.eval(&js), json!(true));
    }

    /// Submits the form with `selector`, as a click on its submit button would, and waits for
    /// the answer's page.
    pub fn submit(&mut self, selector: &str) {
        let before = self.document();
        let js = format!(
            "(function(){{var f=document.querySelector({s});f.requestSubmit();return true}})()",
            s = json!(selector)
        );
        assert_eq!(self.eval(&js), json!(true));
        self.settle_after(before);
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
