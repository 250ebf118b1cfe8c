//! The `awslogs` log driver, done by the agent: a container with `awslogs` writes to Docker's
//! local `json-file` driver (so its output is on disk the moment it is written, and the
//! container never waits on the network), and the agent follows that output through Docker's
//! API and ships it to the server's log store, stream `PREFIX/CONTAINER/TASK_ID` as ECS names it.
//!
//! Every event carries a cursor (the Docker timestamp of its last line, in ns). The server
//! skips events at or before the stream's cursor, and a restarted agent resumes from the
//! cursor the server holds, so nothing is lost or stored twice when either side restarts. A
//! batch is resent until the server takes it; meanwhile nothing more is read, and Docker keeps
//! the output on disk. A stopped container is not removed until everything it wrote is shipped.

use crate::client::{Identity, ServerClient};
use crate::multiline::{Assembler, Grouping};
use crate::runtime::Runtime;
use crate::AgentError;
use berth_agent_proto::{ContainerPlan, DesiredTask, LogBatch, LogLine};
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// A batch goes out this long after its first event at the latest.
const BATCH_DELAY: Duration = Duration::from_millis(200);
/// Logs' limits on one PutLogEvents batch.
const MAX_BATCH_EVENTS: usize = 10_000;
const MAX_BATCH_BYTES: usize = 1_048_576;
const EVENT_OVERHEAD: usize = 26;

/// The options Docker's awslogs driver defines that Berth implements (plus ECS's
/// `awslogs-stream-prefix`); any other is refused by name.
const KNOWN_OPTIONS: &[&str] = &[
    "awslogs-group",
    "awslogs-region",
    "awslogs-stream-prefix",
    "awslogs-stream",
    "awslogs-create-group",
    "awslogs-datetime-format",
    "awslogs-multiline-pattern",
    "awslogs-force-flush-interval-seconds",
    "mode",
    "max-buffer-size",
];

/// Where one container's output goes and how its lines become events.
#[derive(Debug, Clone)]
pub struct Target {
    pub group: String,
    pub stream: String,
    pub create_group: bool,
    pub region: Option<String>,
    pub grouping: Option<Grouping>,
    pub flush_after_ms: i64,
}

fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// How much of an awslogs container's output Docker keeps on disk for the agent (json-file
/// rotation, overriding the daemon's defaults): the most the agent can fall behind, say while
/// the server is down, before the oldest unshipped output is rotated away.
pub const LOCAL_BUFFER: (&str, &str) = ("100m", "5");

/// The Docker log configuration of a container: `awslogs` becomes the local `json-file`
/// (rotating at [`LOCAL_BUFFER`], keeping Docker's generic `mode` and `max-buffer-size`), any
/// other driver goes to Docker as given, and no driver is Docker's default.
pub fn docker_log_config(c: &ContainerPlan) -> Option<(String, HashMap<String, String>)> {
    let driver = c.log_driver.as_deref()?;
    if driver == "awslogs" {
        let mut opts: HashMap<String, String> = c
            .log_options
            .iter()
            .filter(|(k, _)| k.as_str() == "mode" || k.as_str() == "max-buffer-size")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        opts.insert("max-size".into(), LOCAL_BUFFER.0.into());
        opts.insert("max-file".into(), LOCAL_BUFFER.1.into());
        return Some(("json-file".into(), opts));
    }
    Some((
        driver.to_string(),
        c.log_options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    ))
}

/// The awslogs target of container `c` of task `t` (Docker's own checks and words), or `None`
/// when it does not use awslogs. Pure.
pub fn target(
    t: &DesiredTask,
    c: &ContainerPlan,
    container_id: &str,
) -> Result<Option<Target>, String> {
    if c.log_driver.as_deref() != Some("awslogs") {
        return Ok(None);
    }
    let o = &c.log_options;
    if let Some(bad) = o.keys().find(|k| !KNOWN_OPTIONS.contains(&k.as_str())) {
        return Err(format!("unknown log opt '{bad}' for awslogs log driver"));
    }
    let group = o
        .get("awslogs-group")
        .filter(|g| !g.is_empty())
        .ok_or("must specify a value for log opt 'awslogs-group'")?
        .clone();
    let stream =
        berth_api::logs::awslogs_stream(o, &c.name, task_id(&t.task_arn), Some(container_id))
            .unwrap_or_default();
    let create_group = match o.get("awslogs-create-group").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!(
                "invalid value for log opt 'awslogs-create-group': '{other}' is not a boolean"
            ))
        }
    };
    let grouping = Grouping::from_options(
        o.get("awslogs-datetime-format").map(String::as_str),
        o.get("awslogs-multiline-pattern").map(String::as_str),
    )
    .map_err(|e| e.to_string())?;
    let flush_after_ms = match o.get("awslogs-force-flush-interval-seconds") {
        None => crate::multiline::FLUSH_AFTER_MS,
        Some(s) => s.parse::<i64>().map(|n| n * 1000).map_err(|_| {
            format!("invalid value for log opt 'awslogs-force-flush-interval-seconds': '{s}'")
        })?,
    };
    if let Some(mode) = o.get("mode") {
        if mode != "blocking" && mode != "non-blocking" {
            return Err(format!("logger: logging mode not supported: {mode}"));
        }
    }
    Ok(Some(Target {
        group,
        stream,
        create_group,
        region: o.get("awslogs-region").cloned(),
        grouping,
        flush_after_ms,
    }))
}

/// What went wrong shipping, and whether trying again can help.
enum Failure {
    /// The server is not reachable or failed: try again.
    Retry(String),
    /// The server refused (the group is gone, the batch is invalid): trying again cannot help.
    Refused(String),
}

fn failure(e: AgentError) -> Failure {
    match e {
        AgentError::Server(m) if m.contains(": 4") && m.contains("Exception") => {
            Failure::Refused(m)
        }
        AgentError::Refused(m) => Failure::Refused(m),
        other => Failure::Retry(other.to_string()),
    }
}

/// Ships every awslogs container's output; one follower per container.
#[derive(Debug)]
pub struct Shipper {
    client: ServerClient,
    identity: Identity,
    metrics: Arc<crate::metrics::AgentMetrics>,
    followers: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl Shipper {
    pub fn new(
        client: ServerClient,
        identity: Identity,
        metrics: Arc<crate::metrics::AgentMetrics>,
    ) -> Shipper {
        Shipper {
            client,
            identity,
            metrics,
            followers: Mutex::new(HashMap::new()),
        }
    }

    async fn send(&self, t: &Target, stream: &str, events: &[LogLine]) -> Result<i64, Failure> {
        let batch = LogBatch {
            group: t.group.clone(),
            stream: stream.to_string(),
            create_group: t.create_group,
            region: t.region.clone(),
            events: events.to_vec(),
        };
        self.client
            .ship_logs(&self.identity, &batch)
            .await
            .map(|r| r.cursor)
            .map_err(failure)
    }

    /// Before the container is created, as Docker's driver does when it starts: the group must
    /// exist (or be made with `awslogs-create-group`). The error is Docker's, for the
    /// container's reason.
    pub async fn prepare(&self, t: &Target) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match self.send(t, "", &[]).await {
                Ok(_) => return Ok(()),
                Err(Failure::Refused(m)) => {
                    return Err(format!(
                        "failed to initialize logging driver: {}",
                        refusal_text(&m)
                    ))
                }
                Err(Failure::Retry(m)) => last = m,
            }
        }
        Err(format!(
            "failed to initialize logging driver: the Berth server is not reachable: {last}"
        ))
    }

    /// Starts following container `id` unless a follower already is.
    pub fn follow(self: &Arc<Self>, runtime: Arc<dyn Runtime>, id: &str, t: Target) {
        let mut followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        if followers.get(id).is_some_and(|h| !h.is_finished()) {
            return;
        }
        let me = self.clone();
        let cid = id.to_string();
        followers.insert(
            id.to_string(),
            tokio::spawn(async move { me.ship(runtime, cid, t).await }),
        );
    }

    /// Whether container `id` still has output to ship.
    pub fn busy(&self, id: &str) -> bool {
        self.followers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|h| !h.is_finished())
    }

    /// Sends `events` until the server takes them (a refusal drops them, said loudly); the
    /// stream's cursor after.
    async fn deliver(&self, t: &Target, events: &[LogLine]) -> Option<i64> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.send(t, &t.stream, events).await {
                Ok(cursor) => {
                    self.metrics.log_events_shipped.inc_by(events.len() as u64);
                    self.metrics.log_backlog.dec_by(events.len() as i64);
                    return Some(cursor);
                }
                Err(Failure::Refused(m)) => {
                    tracing::error!(
                        group = t.group,
                        stream = t.stream,
                        events = events.len(),
                        error = m,
                        "the server refused shipped log events; they are dropped"
                    );
                    self.metrics.log_backlog.dec_by(events.len() as i64);
                    return None;
                }
                Err(Failure::Retry(m)) => {
                    tracing::warn!(
                        group = t.group,
                        stream = t.stream,
                        error = m,
                        "cannot ship logs yet; retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn ship(self: Arc<Self>, runtime: Arc<dyn Runtime>, id: String, t: Target) {
        // Where the server's copy ends.
        let Some(held) = self.deliver(&t, &[]).await else {
            return;
        };
        let mut s = Follow {
            assembler: Assembler::new(t.grouping.clone()).with_flush_after_ms(t.flush_after_ms),
            batch: Batch::after(held),
            last_line: held,
            recent: BTreeSet::new(),
            in_flight: None,
        };
        let mut backoff = Duration::from_millis(200);
        // Follow until the container stops; then read what is left until nothing more comes
        // (Docker may end a follow before its copier has written the last lines).
        let mut quiet_drains = 0;
        loop {
            let follow = quiet_drains == 0;
            let resume = s.last_line;
            let lines = match runtime.output(&id, resume, follow).await {
                Ok(l) => l,
                Err(e) => {
                    if matches!(runtime.inspect(&id).await, Ok(None)) {
                        tracing::warn!(container = id, error = %e, "the container is gone; its unread output with it");
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            match self.read(&t, &mut s, lines, resume).await {
                // Reopened after a pause: a stream that fails at once must not spin.
                Read::Failed => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Read::Ended { new_lines } => {
                    let running = matches!(runtime.inspect(&id).await, Ok(Some(o)) if o.running);
                    if follow && running {
                        // The follow ended under a running container (Docker restarted?).
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    if follow {
                        quiet_drains = 1;
                    } else if new_lines == 0 {
                        quiet_drains += 1;
                        if quiet_drains > 2 {
                            break;
                        }
                    } else {
                        quiet_drains = 1;
                    }
                    if !follow {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
        let rest = s.assembler.flush(now_ms(), true);
        s.batch.add_all(rest, s.last_line);
        let events = s.batch.take();
        self.pipeline(&t, &mut s, events).await;
        if let Some(last) = s.in_flight.take() {
            let _ = last.await;
        }
    }

    /// Sends a batch while the next is being read: one batch in flight at a time, so they
    /// arrive in order.
    async fn pipeline(self: &Arc<Self>, t: &Target, s: &mut Follow, events: Vec<LogLine>) {
        if events.is_empty() {
            return;
        }
        self.metrics.log_backlog.inc_by(events.len() as i64);
        if let Some(previous) = s.in_flight.take() {
            let _ = previous.await;
        }
        let (me, t) = (self.clone(), t.clone());
        s.in_flight = Some(tokio::spawn(async move {
            me.deliver(&t, &events).await;
        }));
    }

    /// Ships what one read of the container's output gives, until it ends or fails.
    async fn read(
        self: &Arc<Self>,
        t: &Target,
        s: &mut Follow,
        mut lines: crate::runtime::OutputLines,
        resume: i64,
    ) -> Read {
        let mut new_lines = 0;
        loop {
            let due = s.batch.due(&s.assembler);
            let next = tokio::select! {
                l = lines.next() => l,
                _ = tokio::time::sleep_until(due) => {
                    let done = s.assembler.flush(now_ms(), false);
                    s.batch.add_all(done, s.last_line);
                    if s.batch.first_at.is_some_and(|f| f.elapsed() >= BATCH_DELAY) {
                        let events = s.batch.take();
                        self.pipeline(t, s, events).await;
                    }
                    continue;
                }
            };
            let line = match next {
                None => return Read::Ended { new_lines },
                Some(Err(e)) => {
                    tracing::warn!(group = t.group, stream = t.stream, error = %e, "reading container output failed; reopening");
                    return Read::Failed;
                }
                Some(Ok(line)) => line,
            };
            if s.shipped(line.time_ns, resume) {
                continue;
            }
            new_lines += 1;
            let events = s.assembler.push(&line.text, line.time_ns / 1_000_000);
            // A grouped event is complete when the next one starts, so what the push
            // releases ends with the line before.
            let at = if s.assembler.is_grouping() {
                s.last_line
            } else {
                line.time_ns
            };
            s.note(line.time_ns);
            for full in s.batch.add_all(events, at) {
                self.pipeline(t, s, full).await;
            }
        }
    }
}

/// How a read of the output ended.
enum Read {
    Ended { new_lines: usize },
    Failed,
}

/// How long Docker's stamps of stdout and stderr may disagree with the order it wrote them.
const SKEW_NS: i64 = 2_000_000_000;

/// One container's shipping state across reads of its output.
struct Follow {
    assembler: Assembler,
    batch: Batch,
    /// The newest line time read.
    last_line: i64,
    /// The times of lines read in the last `SKEW_NS` before `last_line`; empty after a
    /// restart, when only the server's cursor is known.
    recent: BTreeSet<i64>,
    /// The batch being sent.
    in_flight: Option<JoinHandle<()>>,
}

impl Follow {
    /// Whether a line read again after reopening at `resume` was already taken. Docker stamps
    /// stdout and stderr apart, so a line may come after one stamped later: within the skew
    /// window the exact times taken decide.
    fn shipped(&self, time_ns: i64, resume: i64) -> bool {
        if time_ns > resume {
            return false;
        }
        if self.recent.is_empty() {
            return true;
        }
        time_ns < resume - SKEW_NS || self.recent.contains(&time_ns)
    }

    fn note(&mut self, time_ns: i64) {
        self.last_line = self.last_line.max(time_ns);
        self.recent.insert(time_ns);
        let floor = self.last_line - SKEW_NS;
        while self.recent.first().is_some_and(|t| *t < floor) {
            self.recent.pop_first();
        }
    }
}

fn refusal_text(m: &str) -> String {
    // The server's JSON error, as Docker prints CloudWatch's: "NAME: message".
    let json = m.find('{').map(|i| &m[i..]).unwrap_or(m);
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(v) => format!(
            "{}: {}",
            v["__type"].as_str().unwrap_or("Error"),
            v["message"].as_str().unwrap_or_default()
        ),
        Err(_) => m.to_string(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Events waiting to go, within Logs' batch limits.
#[derive(Debug, Default)]
struct Batch {
    events: Vec<LogLine>,
    bytes: usize,
    first_at: Option<tokio::time::Instant>,
    /// The cursor of the last event added: each next one is larger, as the server requires.
    last: i64,
}

impl Batch {
    fn after(cursor: i64) -> Batch {
        Batch {
            last: cursor,
            ..Default::default()
        }
    }

    /// When the loop must wake without a new line: the batch's delay or the assembler's flush.
    fn due(&self, a: &Assembler) -> tokio::time::Instant {
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let batch = self.first_at.map(|f| f + BATCH_DELAY).unwrap_or(far);
        let flush = a
            .next_flush_at()
            .map(|at| {
                let wait = (at - now_ms()).max(0) as u64;
                tokio::time::Instant::now() + Duration::from_millis(wait)
            })
            .unwrap_or(far);
        batch.min(flush)
    }

    /// Adds events released together, the last ending at the line time `cursor` (earlier ones
    /// just before it); each event's cursor is also past the one before. Returns the batches
    /// that filled up.
    fn add_all(&mut self, events: Vec<crate::multiline::Event>, cursor: i64) -> Vec<Vec<LogLine>> {
        let n = events.len() as i64;
        let mut full = Vec::new();
        for (i, e) in events.into_iter().enumerate() {
            let size = e.message.len() + EVENT_OVERHEAD;
            if self.events.len() >= MAX_BATCH_EVENTS || self.bytes + size > MAX_BATCH_BYTES {
                full.push(self.take());
            }
            if self.first_at.is_none() {
                self.first_at = Some(tokio::time::Instant::now());
            }
            self.bytes += size;
            let at = (cursor - (n - 1 - i as i64)).max(self.last + 1);
            self.last = at;
            self.events.push(LogLine {
                timestamp: e.timestamp_ms,
                message: e.message,
                cursor: at,
            });
        }
        full
    }

    fn take(&mut self) -> Vec<LogLine> {
        self.bytes = 0;
        self.first_at = None;
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn task() -> DesiredTask {
        DesiredTask {
            task_arn: "arn:aws:ecs:us-east-1:000000000000:task/c/0123abcd".into(),
            cluster_arn: "arn:aws:ecs:us-east-1:000000000000:cluster/c".into(),
            family: "web".into(),
            revision: 1,
            desired_status: "RUNNING".into(),
            network_mode: "bridge".into(),
            containers: vec![],
            volumes: vec![],
            stop_reason: None,
            cpu: None,
            memory: None,
            ephemeral_storage_gib: None,
            network: None,
        }
    }

    fn ctr(opts: &[(&str, &str)]) -> ContainerPlan {
        ContainerPlan {
            name: "app".into(),
            log_driver: Some("awslogs".into()),
            log_options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        }
    }

    #[test]
    fn streams_are_named_as_ecs_names_them() {
        let t = target(
            &task(),
            &ctr(&[
                ("awslogs-group", "/ecs/web"),
                ("awslogs-stream-prefix", "ecs"),
            ]),
            "cid",
        )
        .expect("valid")
        .expect("awslogs");
        assert_eq!(
            (t.group.as_str(), t.stream.as_str()),
            ("/ecs/web", "ecs/app/0123abcd")
        );
        let t = target(&task(), &ctr(&[("awslogs-group", "g")]), "cid")
            .expect("valid")
            .expect("awslogs");
        assert_eq!(
            t.stream, "cid",
            "without a prefix Docker names the stream by container id"
        );
    }

    #[test]
    fn docker_s_checks_and_words() {
        let err = |opts: &[(&str, &str)]| target(&task(), &ctr(opts), "c").expect_err("refused");
        assert_eq!(err(&[]), "must specify a value for log opt 'awslogs-group'");
        assert_eq!(
            err(&[("awslogs-group", "g"), ("awslogs-bogus", "1")]),
            "unknown log opt 'awslogs-bogus' for awslogs log driver"
        );
        assert!(
            err(&[("awslogs-group", "g"), ("awslogs-create-group", "yes")]).contains("boolean")
        );
        assert!(
            err(&[("awslogs-group", "g"), ("mode", "sometimes")]).contains("mode not supported")
        );
        assert!(err(&[
            ("awslogs-group", "g"),
            ("awslogs-datetime-format", "%Y"),
            ("awslogs-multiline-pattern", "^x")
        ])
        .contains("at the same time"));
    }

    #[test]
    fn awslogs_is_json_file_locally_and_other_drivers_pass_through() {
        let c = ctr(&[
            ("awslogs-group", "g"),
            ("mode", "non-blocking"),
            ("max-buffer-size", "4m"),
        ]);
        let (driver, opts) = docker_log_config(&c).expect("a log config");
        assert_eq!(driver, "json-file");
        assert_eq!(opts.get("mode").map(String::as_str), Some("non-blocking"));
        assert_eq!(opts.get("max-buffer-size").map(String::as_str), Some("4m"));
        assert!(
            !opts.contains_key("awslogs-group"),
            "awslogs options stay with the agent"
        );
        let mut c = ctr(&[("max-size", "10m")]);
        c.log_driver = Some("local".into());
        let (driver, opts) = docker_log_config(&c).expect("a log config");
        assert_eq!(
            (driver.as_str(), opts.get("max-size").map(String::as_str)),
            ("local", Some("10m"))
        );
        c.log_driver = None;
        assert!(docker_log_config(&c).is_none());
    }

    #[test]
    fn lines_read_again_are_known_by_their_times() {
        let mut f = Follow {
            assembler: Assembler::new(None),
            batch: Batch::after(0),
            last_line: 100,
            recent: BTreeSet::new(),
            in_flight: None,
        };
        assert!(
            f.shipped(100, 100),
            "after a restart, everything up to the cursor was shipped"
        );
        assert!(!f.shipped(101, 100));
        let s = 1_000_000_000;
        for t in [10 * s, 10 * s + 5, 11 * s] {
            f.note(t);
        }
        let resume = f.last_line;
        assert!(f.shipped(10 * s + 5, resume), "taken within the window");
        assert!(
            !f.shipped(10 * s + 3, resume),
            "a late stderr line within the window is new"
        );
        assert!(f.shipped(8 * s, resume), "older than the window: taken");
        assert!(!f.shipped(11 * s + 1, resume));
    }

    #[test]
    fn batches_keep_logs_limits_and_increasing_cursors() {
        let mut b = Batch::after(0);
        let ev = |m: &str| crate::multiline::Event {
            timestamp_ms: 1,
            message: m.to_string(),
        };
        let big = "x".repeat(200_000);
        let full = b.add_all((0..6).map(|_| ev(&big)).collect(), 100);
        assert_eq!(full.len(), 1, "six 200 kB events do not fit one batch");
        let sent: Vec<i64> = full[0]
            .iter()
            .chain(b.events.iter())
            .map(|e| e.cursor)
            .collect();
        assert_eq!(
            sent,
            vec![95, 96, 97, 98, 99, 100],
            "cursors increase to the line's"
        );
        assert!(full[0].iter().map(|e| e.message.len() + 26).sum::<usize>() <= MAX_BATCH_BYTES);
        // A line stamped earlier than one already taken (stderr beside stdout) still gets a
        // larger cursor, or the server would take it for a resend.
        b.add_all(vec![ev("late")], 50);
        assert_eq!(b.events.last().map(|e| e.cursor), Some(101));
    }
}
