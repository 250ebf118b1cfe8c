//! The agent's side of the protocol: join, poll and report over HTTP, poll and report signed
//! with the agent's own key; and the [`Reporter`] that keeps each task's latest report until
//! the server acknowledges it.

use crate::AgentError;
use berth_agent_proto::{
    JoinRequest, JoinResponse, LogBatch, LogBatchResponse, PollRequest, PollResponse,
    ReportRequest, ReportResponse, StatsReport, TaskReport, JOIN_PATH, LOGS_PATH, POLL_PATH,
    REPORT_PATH, STATS_PATH,
};
use berth_api::sigv4::{sign_request, SigningKey};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;

/// Who this agent is, once joined; kept in the data dir so a restart keeps its identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub server: String,
    pub cluster: String,
    pub instance_id: String,
    pub container_instance_arn: String,
    pub cluster_arn: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// A server that could not be reached, did not answer or failed with a 5xx (another may).
struct Unreached(AgentError);

#[derive(Debug, Clone)]
pub struct ServerClient {
    /// Every server this agent knows (`--server a,b,…`: servers sharing one store).
    bases: Vec<String>,
    /// The one it talks to until that one fails.
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl ServerClient {
    /// `server`: one URL, or several separated by commas.
    pub fn new(server: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let bases: Vec<String> = server
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty())
            .collect();
        ServerClient {
            bases: if bases.is_empty() {
                vec![server.to_string()]
            } else {
                bases
            },
            current: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// The server requests go to now.
    pub fn base(&self) -> &str {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.bases[i % self.bases.len()]
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        identity: Option<&Identity>,
        timeout: Duration,
    ) -> Result<T, AgentError> {
        let key = identity.map(|id| SigningKey {
            access_key: &id.access_key_id,
            secret: &id.secret_access_key,
            region: &id.region,
            service: "ecs",
        });
        self.post_signed(path, body, key, timeout).await
    }

    /// A cluster's registration token, asked with a user's (admin's) key: Berth's own
    /// `POST /_berth/v1/join-token`.
    pub async fn join_token(
        &self,
        cluster: &str,
        access_key: &str,
        secret: &str,
        region: &str,
    ) -> Result<String, AgentError> {
        #[derive(Deserialize)]
        struct Answer {
            token: String,
        }
        let body = serde_json::to_vec(&serde_json::json!({ "cluster": cluster }))
            .map_err(|e| AgentError::Protocol(e.to_string()))?;
        let key = SigningKey {
            access_key,
            secret,
            region,
            service: "ecs",
        };
        let a: Answer = self
            .post_signed(
                "/_berth/v1/join-token",
                body,
                Some(key),
                Duration::from_secs(30),
            )
            .await?;
        Ok(a.token)
    }

    /// An operator's call to one of the server's own (`/_berth/v1/…`) routes, signed with a
    /// user's key: its JSON answer.
    pub async fn admin_call(
        &self,
        path: &str,
        body: &serde_json::Value,
        (access_key, secret, region): (&str, &str, &str),
    ) -> Result<serde_json::Value, AgentError> {
        let body = serde_json::to_vec(body).map_err(|e| AgentError::Protocol(e.to_string()))?;
        let key = SigningKey {
            access_key,
            secret,
            region,
            service: "ecs",
        };
        self.post_signed(path, body, Some(key), Duration::from_secs(60))
            .await
    }

    /// Sends to the current server; one that cannot be reached, does not answer or fails
    /// (5xx) hands over to the next (every agent request may be repeated: polls read, reports apply at most
    /// once in effect), each server tried once.
    async fn post_signed<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        key: Option<SigningKey<'_>>,
        timeout: Duration,
    ) -> Result<T, AgentError> {
        let mut last = None;
        for _ in 0..self.bases.len() {
            let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
            let base = &self.bases[i % self.bases.len()];
            match self
                .post_to(base, path, body.clone(), key.as_ref(), timeout)
                .await
            {
                Err(Unreached(e)) if self.bases.len() > 1 => {
                    tracing::warn!(server = base, error = %e, "the server is unreachable or failing; trying the next");
                    let _ = self.current.compare_exchange(
                        i,
                        i + 1,
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    last = Some(e);
                }
                Err(Unreached(e)) => return Err(e),
                Ok(r) => return r,
            }
        }
        Err(last.unwrap_or_else(|| AgentError::Server(format!("{path}: no server answered"))))
    }

    /// One request to one server: `Err(Unreached)` when it could not be reached or did not
    /// answer, else its outcome.
    async fn post_to<T: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: Vec<u8>,
        key: Option<&SigningKey<'_>>,
        timeout: Duration,
    ) -> Result<Result<T, AgentError>, Unreached> {
        let url = format!("{base}{path}");
        let host = base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        let mut req = http::Request::post(&url)
            .header("host", &host)
            .header("content-type", "application/json");
        if let Some(key) = key {
            let headers = match sign_request(
                key,
                "POST",
                &url,
                &[("host", &host), ("content-type", "application/json")],
                &body,
                SystemTime::now(),
            ) {
                Ok(h) => h,
                Err(e) => return Ok(Err(AgentError::Protocol(e.to_string()))),
            };
            for (k, v) in headers {
                req = req.header(k, v);
            }
        }
        let req = match req.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => return Ok(Err(AgentError::Protocol(e.to_string()))),
        };
        let resp = tokio::time::timeout(timeout, self.http.request(req))
            .await
            .map_err(|_| {
                Unreached(AgentError::Server(format!(
                    "{path}: no answer within {timeout:?}"
                )))
            })?
            .map_err(|e| Unreached(AgentError::Server(format!("{path}: {e}"))))?;
        let status = resp.status();
        let bytes = tokio::time::timeout(timeout, resp.into_body().collect())
            .await
            .map_err(|_| Unreached(AgentError::Server(format!("{path}: the answer stalled"))))?
            .map_err(|e| Unreached(AgentError::Server(format!("{path}: {e}"))))?
            .to_bytes();
        if status.is_server_error() {
            // A server that fails (one cut off from its store answers 500 or 503) is passed
            // over like one that cannot be reached.
            let text = String::from_utf8_lossy(&bytes).to_string();
            return Err(Unreached(AgentError::Server(format!(
                "{path}: {status}: {text}"
            ))));
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes).to_string();
            return Ok(Err(
                if status.as_u16() == 403 || text.contains("AccessDenied") {
                    AgentError::Refused(text)
                } else {
                    AgentError::Server(format!("{path}: {status}: {text}"))
                },
            ));
        }
        Ok(serde_json::from_slice(&bytes)
            .map_err(|e| AgentError::Protocol(format!("{path}: the answer is not valid: {e}"))))
    }

    pub async fn join(&self, r: &JoinRequest) -> Result<JoinResponse, AgentError> {
        let body = serde_json::to_vec(r).map_err(|e| AgentError::Protocol(e.to_string()))?;
        self.post(JOIN_PATH, body, None, Duration::from_secs(30))
            .await
    }

    pub async fn poll(
        &self,
        id: &Identity,
        known_version: Option<String>,
        wait: Duration,
    ) -> Result<PollResponse, AgentError> {
        let body = serde_json::to_vec(&PollRequest {
            known_version,
            wait_ms: wait.as_millis() as u64,
            accepts_unchanged: true,
            accepts_changes: true,
        })
        .map_err(|e| AgentError::Protocol(e.to_string()))?;
        self.post(POLL_PATH, body, Some(id), wait + Duration::from_secs(15))
            .await
    }

    /// Ships one batch of a container's output (the awslogs driver).
    pub async fn ship_logs(
        &self,
        id: &Identity,
        batch: &LogBatch,
    ) -> Result<LogBatchResponse, AgentError> {
        let body = serde_json::to_vec(batch).map_err(|e| AgentError::Protocol(e.to_string()))?;
        self.post(LOGS_PATH, body, Some(id), Duration::from_secs(30))
            .await
    }

    /// Sends one sample of the instance's tasks' resource use.
    pub async fn send_stats(
        &self,
        id: &Identity,
        report: &StatsReport,
    ) -> Result<ReportResponse, AgentError> {
        let body = serde_json::to_vec(report).map_err(|e| AgentError::Protocol(e.to_string()))?;
        self.post(STATS_PATH, body, Some(id), Duration::from_secs(30))
            .await
    }

    /// Reads or sets a task's scale-in protection for one of its containers.
    pub async fn task_protection(
        &self,
        id: &Identity,
        r: &berth_agent_proto::ProtectionRequest,
    ) -> Result<berth_agent_proto::ProtectionResponse, AgentError> {
        let body = serde_json::to_vec(r).map_err(|e| AgentError::Protocol(e.to_string()))?;
        self.post(
            berth_agent_proto::PROTECTION_PATH,
            body,
            Some(id),
            Duration::from_secs(30),
        )
        .await
    }

    pub async fn report(
        &self,
        id: &Identity,
        reports: Vec<TaskReport>,
    ) -> Result<ReportResponse, AgentError> {
        let body = serde_json::to_vec(&ReportRequest { reports })
            .map_err(|e| AgentError::Protocol(e.to_string()))?;
        self.post(REPORT_PATH, body, Some(id), Duration::from_secs(30))
            .await
    }
}

/// Each task's latest report, until the server has acknowledged it. A report is a whole
/// snapshot of the task, so a newer one replaces an unsent older one.
#[derive(Debug, Default)]
pub struct Reporter {
    pending: Mutex<BTreeMap<String, (u64, TaskReport)>>,
    /// Tasks whose STOPPED report the server has acknowledged.
    stopped: Mutex<std::collections::HashSet<String>>,
    seq: std::sync::atomic::AtomicU64,
    pub(crate) notify: Notify,
}

impl Reporter {
    pub fn submit(&self, report: TaskReport) {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut p) = self.pending.lock() {
            p.insert(report.task_arn.clone(), (seq, report));
        }
        self.notify.notify_one();
    }

    /// What to send now, with the sequence numbers to acknowledge afterwards.
    pub fn batch(&self) -> Vec<(u64, TaskReport)> {
        self.pending
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets the reports that were sent and not replaced since.
    pub fn acknowledge(&self, sent: &[(u64, TaskReport)]) {
        if let Ok(mut s) = self.stopped.lock() {
            s.extend(
                sent.iter()
                    .filter(|(_, r)| r.last_status == "STOPPED")
                    .map(|(_, r)| r.task_arn.clone()),
            );
        }
        if let Ok(mut p) = self.pending.lock() {
            for (seq, r) in sent {
                if p.get(&r.task_arn).is_some_and(|(s, _)| s == seq) {
                    p.remove(&r.task_arn);
                }
            }
        }
    }

    /// Whether the server has acknowledged `task_arn` as STOPPED.
    pub fn stop_acknowledged(&self, task_arn: &str) -> bool {
        self.stopped
            .lock()
            .map(|s| s.contains(task_arn))
            .unwrap_or(false)
    }

    pub fn is_empty(&self) -> bool {
        self.pending.lock().map(|p| p.is_empty()).unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(arn: &str, status: &str) -> TaskReport {
        TaskReport {
            task_arn: arn.into(),
            last_status: status.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_report_replaced_while_in_flight_is_sent_again() {
        let r = Reporter::default();
        r.submit(rep("a", "PENDING"));
        r.submit(rep("b", "RUNNING"));
        let sent = r.batch();
        assert_eq!(sent.len(), 2);
        r.submit(rep("a", "RUNNING"));
        r.acknowledge(&sent);
        let left = r.batch();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.last_status, "RUNNING");
        r.acknowledge(&left);
        assert!(r.is_empty());
    }
}
