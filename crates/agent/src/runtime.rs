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
    /// bridge, host, none, a network's name, or `container:ID` (another container's
    /// network namespace, as an `awsvpc` task's containers join their pause container's).
    pub network_mode: String,
    /// On the network named by `network_mode`: the container's fixed IPv4 address and MAC
    /// address (an `awsvpc` task's pause container, at the task's interface's).
    pub ipv4_address: Option<String>,
    pub mac_address: Option<String>,
    /// `(container port, protocol, host port)`; `None` lets Docker pick an ephemeral port.
    pub ports: Vec<(u16, String, Option<u16>)>,
    /// The host address `ports` are published on. Bridge mode publishes on every address
    /// without one; on any other network only a container with one publishes (an `awsvpc`
    /// task's pause container, on the task's public address).
    pub publish_ip: Option<String>,
    pub healthcheck: Option<HealthcheckSpec>,
    pub stop_timeout: Option<i64>,
    /// Docker's log driver and its options; `None` is the daemon's default.
    pub log_config: Option<(String, HashMap<String, String>)>,
    /// The definition's host options, links and volumesFrom naming Docker's containers.
    pub host: berth_agent_proto::HostOptions,
    /// The cgroup the container's cgroup is made in (Docker's `CgroupParent`): the task's own
    /// (`/berth/TASKID`, see [`crate::cgroup`]) when it has a task-level size.
    pub cgroup_parent: Option<String>,
    /// The limit of the container's writable layer, GiB (a FARGATE task's ephemeral storage),
    /// where the storage driver can limit one.
    pub storage_gib: Option<u32>,
}

/// One line of a container's output (stdout or stderr), with the time Docker took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// Nanoseconds since the epoch: increasing, so it is where a reader resumes.
    pub time_ns: i64,
    /// Without its newline.
    pub text: String,
}

/// A container's output from some time on, ending when the container has stopped and
/// everything it wrote was read.
pub type OutputLines = futures::stream::BoxStream<'static, Result<OutputLine, RuntimeError>>;

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
    /// Seconds since the epoch, when it was started.
    pub started_at: Option<f64>,
    /// Its address on its network (bridge mode).
    pub ip_address: Option<String>,
}

/// One container found by label.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub id: String,
    /// Docker's name, without the leading `/`.
    pub name: String,
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
    /// The cgroup filesystem refused a task's cgroup ([`crate::cgroup`]).
    #[error("{0}")]
    Cgroup(String),
}

#[async_trait]
pub trait Runtime: Send + Sync + std::fmt::Debug + 'static {
    /// The engine's version, for the instance's versionInfo.
    async fn version(&self) -> Result<String, RuntimeError>;
    /// Pulls `image` unless it is already present, logging in with `auth` if given.
    async fn ensure_image(
        &self,
        image: &str,
        auth: Option<&berth_agent_proto::RegistryCredentials>,
    ) -> Result<(), RuntimeError>;
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
    /// A container's output from `since_ns` on (whole seconds: earlier lines of that second
    /// come too); with `follow`, until the container has stopped.
    async fn output(
        &self,
        id: &str,
        since_ns: i64,
        follow: bool,
    ) -> Result<OutputLines, RuntimeError>;
    /// The log drivers the engine has.
    async fn log_drivers(&self) -> Result<Vec<String>, RuntimeError>;
    /// One sample of a container's resource use, in Docker's stats shape.
    async fn stats(&self, id: &str) -> Result<serde_json::Value, RuntimeError>;
    /// The gateway address of Docker's default bridge, which containers can reach.
    async fn bridge_gateway(&self) -> Result<Option<String>, RuntimeError>;
    /// Makes [`crate::pause::IMAGE`] from the agent's own bytes unless it is present: Berth
    /// pulls nothing from the internet.
    async fn ensure_pause_image(&self) -> Result<(), RuntimeError>;
    /// Creates the bridge network `name` on `subnet` (a CIDR block) with `gateway`, unless a
    /// network of that name exists.
    async fn ensure_network(
        &self,
        name: &str,
        subnet: &str,
        gateway: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError>;
    /// Moves the running container `id` on `network` to the address `ip` with `mac`
    /// (disconnected, then connected at them) and renames it `name`: a spare pause container
    /// becoming a task's (see [`crate::spares`]).
    async fn readdress(
        &self,
        id: &str,
        network: &str,
        ip: &str,
        mac: &str,
        name: &str,
    ) -> Result<(), RuntimeError>;
    /// Removes the network `name`; one already gone is fine, one still in use is an error.
    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError>;
    /// Replaces the filter table of the running container's network namespace with `ruleset`
    /// (`iptables-restore` input, see [`crate::firewall`]).
    async fn apply_firewall(&self, container_id: &str, ruleset: &str) -> Result<(), RuntimeError>;
    /// Makes (or finds, after an agent restart) the cgroup of the task `task_id` (its ARN's
    /// last segment) capping its containers together at `cpu_units` (1024 a vCPU) and
    /// `memory_mib`, and returns the cgroup parent to create them with. `None` when there is
    /// nothing to cap or the host cannot (said once; the task runs without).
    async fn ensure_task_cgroup(
        &self,
        task_id: &str,
        cpu_units: Option<u32>,
        memory_mib: Option<u32>,
    ) -> Result<Option<String>, RuntimeError>;
    /// Removes the task's cgroup once its containers are gone (retried a while; one that
    /// stays is logged). One not there is fine.
    async fn remove_task_cgroup(&self, task_id: &str);
}

/// An in-memory runtime for the engine's fast tests: containers are records, "running" is a
/// flag the test flips, and every call is logged so a test can check the order of operations.
#[cfg(test)]
pub mod fake {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    #[derive(Debug, Clone, Default)]
    pub struct FakeContainer {
        pub spec: CreateSpec,
        pub obs: Observed,
        /// The name a readdress gave it (then its key and id).
        pub renamed: Option<String>,
    }

    #[derive(Debug, Default)]
    pub struct FakeRuntime {
        pub images: Mutex<Vec<String>>,
        pub containers: Mutex<HashMap<String, FakeContainer>>,
        /// `create NAME`, `start NAME`, `stop NAME TIMEOUT`, `remove NAME`, `pull IMAGE`,
        /// `pause-image`, `network NAME`, `remove-network NAME`, `firewall NAME`,
        /// `cgroup TASKID`, `remove-cgroup TASKID`.
        pub log: Mutex<Vec<String>>,
        /// The networks made, by name: (subnet, gateway, labels).
        pub networks: Mutex<HashMap<String, FakeNetwork>>,
        /// The last ruleset applied to each container, by id.
        pub rulesets: Mutex<HashMap<String, String>>,
        /// Calls that fail: `network` (ensure_network), `firewall`, `cgroup`
        /// (ensure_task_cgroup).
        pub failing: Mutex<HashSet<&'static str>>,
        /// The task cgroups asked for, by task id: (cpu units, memory MiB).
        pub cgroups: Mutex<HashMap<String, TaskSize>>,
    }

    /// A network the fake made: (subnet, gateway, labels).
    pub type FakeNetwork = (String, String, HashMap<String, String>);
    /// A task size asked for: (cpu units, memory MiB).
    pub type TaskSize = (Option<u32>, Option<u32>);

    impl FakeRuntime {
        pub fn with_images(images: &[&str]) -> Self {
            let f = FakeRuntime::default();
            f.images
                .lock()
                .unwrap()
                .extend(images.iter().map(|s| s.to_string()));
            f
        }

        fn note(&self, s: String) {
            self.log.lock().unwrap().push(s);
        }

        pub fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }

        /// Makes the container whose name ends with `-SUFFIX` exit with `code`.
        pub fn exit(&self, suffix: &str, code: i64) {
            let mut m = self.containers.lock().unwrap();
            let c = m
                .values_mut()
                .find(|c| c.spec.name.contains(suffix))
                .expect("container exists");
            c.obs.running = false;
            c.obs.exit_code = Some(code);
        }

        /// The error of a call a test made fail.
        fn failure(&self, call: &'static str) -> Result<(), RuntimeError> {
            if self.failing.lock().unwrap().contains(call) {
                Err(RuntimeError::Api(format!("{call} failed (fake)")))
            } else {
                Ok(())
            }
        }

        /// The container named `NAME` in the log (`ecs-FAMILY-REV-NAME-TASK`).
        pub fn container(&self, short: &str) -> Option<FakeContainer> {
            self.containers
                .lock()
                .unwrap()
                .values()
                .find(|c| c.spec.name.split('-').nth(3) == Some(short))
                .cloned()
        }

        pub fn set_health(&self, suffix: &str, health: &str) {
            let mut m = self.containers.lock().unwrap();
            if let Some(c) = m.values_mut().find(|c| c.spec.name.contains(suffix)) {
                c.obs.health = Some(health.into());
            }
        }
    }

    #[async_trait]
    impl Runtime for FakeRuntime {
        async fn version(&self) -> Result<String, RuntimeError> {
            Ok("fake".into())
        }
        async fn ensure_image(
            &self,
            image: &str,
            _auth: Option<&berth_agent_proto::RegistryCredentials>,
        ) -> Result<(), RuntimeError> {
            self.note(format!("pull {image}"));
            if self.images.lock().unwrap().iter().any(|i| i == image) {
                Ok(())
            } else {
                Err(RuntimeError::Pull {
                    image: image.into(),
                    message: "manifest unknown".into(),
                })
            }
        }
        async fn ensure_volume(
            &self,
            name: &str,
            _: Option<&str>,
            _: &HashMap<String, String>,
            _: &HashMap<String, String>,
        ) -> Result<(), RuntimeError> {
            self.note(format!("volume {name}"));
            Ok(())
        }
        async fn remove_volume(&self, _: &str) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn create(&self, spec: &CreateSpec) -> Result<String, RuntimeError> {
            let short = spec.name.split('-').nth(3).unwrap_or("").to_string();
            self.note(format!("create {short}"));
            let mut m = self.containers.lock().unwrap();
            if m.contains_key(&spec.name) {
                return Err(RuntimeError::Api(format!("name {} in use", spec.name)));
            }
            m.insert(
                spec.name.clone(),
                FakeContainer {
                    spec: spec.clone(),
                    obs: Observed {
                        id: spec.name.clone(),
                        labels: spec.labels.clone(),
                        ..Default::default()
                    },
                    renamed: None,
                },
            );
            Ok(spec.name.clone())
        }
        async fn start(&self, id: &str) -> Result<(), RuntimeError> {
            let short = id.split('-').nth(3).unwrap_or("").to_string();
            self.note(format!("start {short}"));
            if short == "internalecspause" {
                self.failure("start-pause")?;
            }
            let mut m = self.containers.lock().unwrap();
            let c = m
                .get_mut(id)
                .ok_or(RuntimeError::Api("no such container".into()))?;
            c.obs.running = true;
            c.obs.started = true;
            c.obs.started_at = Some(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
            );
            if c.spec.healthcheck.is_some() {
                c.obs.health = Some("starting".into());
            }
            Ok(())
        }
        async fn inspect(&self, name_or_id: &str) -> Result<Option<Observed>, RuntimeError> {
            Ok(self
                .containers
                .lock()
                .unwrap()
                .get(name_or_id)
                .map(|c| c.obs.clone()))
        }
        async fn stop(&self, id: &str, timeout_s: i64) -> Result<(), RuntimeError> {
            let short = id.split('-').nth(3).unwrap_or("").to_string();
            self.note(format!("stop {short} {timeout_s}"));
            if let Some(c) = self.containers.lock().unwrap().get_mut(id) {
                if c.obs.running {
                    c.obs.running = false;
                    c.obs.exit_code = Some(143);
                }
            }
            Ok(())
        }
        async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
            let short = id.split('-').nth(3).unwrap_or("").to_string();
            self.note(format!("remove {short}"));
            self.containers.lock().unwrap().remove(id);
            Ok(())
        }
        async fn list(&self, label: &str, value: &str) -> Result<Vec<Listed>, RuntimeError> {
            Ok(self
                .containers
                .lock()
                .unwrap()
                .values()
                .filter(|c| c.spec.labels.get(label).map(String::as_str) == Some(value))
                .map(|c| Listed {
                    id: c.obs.id.clone(),
                    name: c.spec.name.clone(),
                    labels: c.spec.labels.clone(),
                    running: c.obs.running,
                })
                .collect())
        }
        async fn output(&self, _: &str, _: i64, _: bool) -> Result<OutputLines, RuntimeError> {
            // Fake containers print nothing.
            Ok(Box::pin(futures::stream::empty()))
        }
        async fn log_drivers(&self) -> Result<Vec<String>, RuntimeError> {
            Ok(vec!["json-file".into(), "none".into()])
        }
        async fn stats(&self, _: &str) -> Result<serde_json::Value, RuntimeError> {
            Ok(serde_json::json!({}))
        }
        async fn bridge_gateway(&self) -> Result<Option<String>, RuntimeError> {
            Ok(None)
        }
        async fn ensure_pause_image(&self) -> Result<(), RuntimeError> {
            self.note("pause-image".into());
            Ok(())
        }
        async fn ensure_network(
            &self,
            name: &str,
            subnet: &str,
            gateway: &str,
            labels: &HashMap<String, String>,
        ) -> Result<(), RuntimeError> {
            self.note(format!("network {name}"));
            self.failure("network")?;
            self.networks
                .lock()
                .unwrap()
                .entry(name.into())
                .or_insert_with(|| (subnet.into(), gateway.into(), labels.clone()));
            Ok(())
        }
        async fn readdress(
            &self,
            id: &str,
            _network: &str,
            ip: &str,
            mac: &str,
            name: &str,
        ) -> Result<(), RuntimeError> {
            self.note(format!("readdress {ip}"));
            self.failure("readdress")?;
            let mut m = self.containers.lock().unwrap();
            let mut c = m
                .remove(id)
                .ok_or_else(|| RuntimeError::Api(format!("no container {id}")))?;
            // Known by its new name from here on (the fake's ids are its names).
            c.spec.ipv4_address = Some(ip.into());
            c.spec.mac_address = Some(mac.into());
            c.obs.id = name.into();
            c.renamed = Some(name.into());
            m.insert(name.into(), c);
            Ok(())
        }
        async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
            self.note(format!("remove-network {name}"));
            self.networks.lock().unwrap().remove(name);
            Ok(())
        }
        async fn apply_firewall(
            &self,
            container_id: &str,
            ruleset: &str,
        ) -> Result<(), RuntimeError> {
            let short = container_id.split('-').nth(3).unwrap_or("").to_string();
            self.note(format!("firewall {short}"));
            self.failure("firewall")?;
            self.rulesets
                .lock()
                .unwrap()
                .insert(container_id.into(), ruleset.into());
            Ok(())
        }
        async fn ensure_task_cgroup(
            &self,
            task_id: &str,
            cpu_units: Option<u32>,
            memory_mib: Option<u32>,
        ) -> Result<Option<String>, RuntimeError> {
            self.note(format!("cgroup {task_id}"));
            self.failure("cgroup")?;
            self.cgroups
                .lock()
                .unwrap()
                .insert(task_id.into(), (cpu_units, memory_mib));
            Ok(crate::cgroup::wanted(cpu_units, memory_mib)
                .then(|| crate::cgroup::cgroup_parent(task_id)))
        }
        async fn remove_task_cgroup(&self, task_id: &str) {
            self.note(format!("remove-cgroup {task_id}"));
        }
    }
}
