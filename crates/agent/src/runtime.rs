//! The container runtime as the task engine needs it: a narrow trait over Docker, in the
//! agent's own terms, so the engine never sees Docker's API types.

use async_trait::async_trait;
use berth_agent_proto::Binding;
use std::collections::HashMap;

/// A container to create.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateSpec {
    pub name: String,
    pub image: String,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    /// `NAME=value`.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub labels: HashMap<String, String>,
    pub cpu_shares: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub memory_reservation_bytes: Option<i64>,
    /// `(name, soft, hard)`.
    pub ulimits: Vec<(String, i64, i64)>,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    /// `SOURCE:TARGET[:ro]`, SOURCE a host path or a volume name.
    pub binds: Vec<String>,
    /// bridge, host or none.
    pub network_mode: String,
    /// `(container port, protocol, host port)`; `None` lets Docker pick an ephemeral port.
    pub ports: Vec<(u16, String, Option<u16>)>,
    pub healthcheck: Option<HealthcheckSpec>,
    pub stop_timeout: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckSpec {
    pub test: Vec<String>,
    pub interval_ns: i64,
    pub timeout_ns: i64,
    pub retries: i64,
    pub start_period_ns: i64,
}

/// What the runtime says about a container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub id: String,
    pub running: bool,
    /// Has it ever been started (a created-only container has not).
    pub started: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: Option<String>,
    /// healthy, unhealthy or starting, when a health check is configured.
    pub health: Option<String>,
    pub bindings: Vec<Binding>,
    pub image_id: Option<String>,
    pub labels: HashMap<String, String>,
    /// Seconds since the epoch, when it has exited.
    pub finished_at: Option<f64>,
}

/// One container found by label.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub id: String,
    pub labels: HashMap<String, String>,
    pub running: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image {image}: {message}")]
    Pull { image: String, message: String },
    #[error("the container runtime: {0}")]
    Api(String),
    #[error("the container runtime is not reachable: {0}")]
    Unreachable(String),
}

#[async_trait]
pub trait Runtime: Send + Sync + std::fmt::Debug + 'static {
    /// The engine's version, for the instance's versionInfo.
    async fn version(&self) -> Result<String, RuntimeError>;
    /// Pulls `image` unless it is already present.
    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError>;
    async fn ensure_volume(
        &self,
        name: &str,
        driver: Option<&str>,
        opts: &HashMap<String, String>,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError>;
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError>;
    /// Creates a container and returns its id.
    async fn create(&self, spec: &CreateSpec) -> Result<String, RuntimeError>;
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// `None` when there is no such container.
    async fn inspect(&self, name_or_id: &str) -> Result<Option<Observed>, RuntimeError>;
    /// SIGTERM (or the image's stop signal), then SIGKILL after `timeout_s`.
    async fn stop(&self, id: &str, timeout_s: i64) -> Result<(), RuntimeError>;
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Containers, running or not, carrying `label=value`.
    async fn list(&self, label: &str, value: &str) -> Result<Vec<Listed>, RuntimeError>;
}
