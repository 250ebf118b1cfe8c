//! [`Runtime`] on the Docker Engine API, through bollard.

use crate::cgroup::TaskCgroups;
use crate::runtime::{
    CreateSpec, Listed, Observed, OutputLine, OutputLines, Runtime, RuntimeError,
};
use async_trait::async_trait;
use berth_agent_proto::Binding;
use bollard::container::{
    Config, CreateContainerOptions, ListContainersOptions, LogOutput, LogsOptions,
    NetworkingConfig, RemoveContainerOptions, RenameContainerOptions, StopContainerOptions,
};
use bollard::errors::Error as BollardError;
use bollard::image::CreateImageOptions;
use bollard::models::{
    DeviceMapping, EndpointIpamConfig, EndpointSettings, HealthConfig, HealthStatusEnum,
    HostConfig, HostConfigLogConfig, Ipam, IpamConfig, PortBinding, ResourcesUlimits,
};
use bollard::network::{ConnectNetworkOptions, CreateNetworkOptions, DisconnectNetworkOptions};
use bollard::volume::CreateVolumeOptions;
use futures::StreamExt;
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How long `iptables-restore` may take in a task's network namespace.
const FIREWALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Docker {
    client: bollard::Docker,
    /// Read json-file logs from disk where the agent can (see [`crate::jsonfile`]).
    log_files: bool,
    /// Tasks' cgroups for their task-level sizes; `None` when turned off.
    cgroups: Option<Arc<TaskCgroups>>,
    /// The engine's cgroup driver, asked once.
    cgroup_driver: Arc<tokio::sync::OnceCell<String>>,
    /// Cleared when the storage driver refuses a size limit (`--storage-opt size`): from
    /// then on containers are made without one.
    storage_limits: Arc<std::sync::atomic::AtomicBool>,
}

fn api(e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError { message, .. } => RuntimeError::Api(message),
        BollardError::HyperResponseError { .. } | BollardError::IOError { .. } => {
            RuntimeError::Unreachable(e.to_string())
        }
        other => RuntimeError::Api(other.to_string()),
    }
}

fn is_not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Docker's zero time means "never".
/// Splits Docker's `2024-01-02T03:04:05.123456789Z ` prefix from a log frame.
fn split_timestamp(frame: &str) -> Option<(i64, &str)> {
    let (stamp, rest) = frame.split_once(' ')?;
    Some((crate::jsonfile::parse_time(stamp)?, rest))
}

fn epoch(s: Option<&str>) -> Option<f64> {
    let s = s?;
    if s.starts_with("0001-") {
        return None;
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

impl Docker {
    /// Connects to the engine at `DOCKER_HOST` or the local socket, and checks it answers.
    pub async fn connect() -> Result<Self, RuntimeError> {
        let client = bollard::Docker::connect_with_local_defaults()
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?
            .with_timeout(Duration::from_secs(120));
        client
            .ping()
            .await
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
        Ok(Docker {
            client,
            log_files: true,
            cgroups: Some(Arc::new(TaskCgroups::default())),
            cgroup_driver: Arc::default(),
            storage_limits: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        })
    }

    /// Whether tasks with a task-level `cpu` or `memory` get a cgroup of their own that caps
    /// their containers together (the default; the ECS agent's
    /// `ECS_ENABLE_TASK_CPU_MEM_LIMIT`), or run without.
    pub fn with_task_cgroups(mut self, on: bool) -> Self {
        self.cgroups = on.then(|| Arc::new(TaskCgroups::default()));
        self
    }

    /// Whether containers' json-file output is read from disk where it can be (the default),
    /// or always through Docker's API.
    pub fn with_log_files(mut self, on: bool) -> Self {
        self.log_files = on;
        self
    }

    /// The container's json-file log, when it logs to one the agent can open.
    async fn json_log(&self, id: &str) -> Option<std::path::PathBuf> {
        if !self.log_files {
            return None;
        }
        let c = self.client.inspect_container(id, None).await.ok()?;
        let log_config = c.host_config.as_ref()?.log_config.as_ref()?;
        let driver = log_config.typ.clone()?;
        // Compressed rotations (`.N.gz`) are read through the API, which inflates them.
        let compressed = log_config
            .config
            .as_ref()
            .and_then(|o| o.get("compress"))
            .is_some_and(|v| v == "true");
        let path = std::path::PathBuf::from(c.log_path.filter(|p| !p.is_empty())?);
        (driver == "json-file" && !compressed && std::fs::File::open(&path).is_ok()).then_some(path)
    }
}

#[async_trait]
impl Runtime for Docker {
    async fn version(&self) -> Result<String, RuntimeError> {
        let v = self.client.version().await.map_err(api)?;
        Ok(v.version.unwrap_or_else(|| "unknown".into()))
    }

    async fn ensure_image(
        &self,
        image: &str,
        auth: Option<&berth_agent_proto::RegistryCredentials>,
    ) -> Result<(), RuntimeError> {
        match self.client.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api(e)),
        }
        let opts = CreateImageOptions {
            from_image: image,
            ..Default::default()
        };
        let credentials = auth.map(|a| bollard::auth::DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(a.server.clone()),
            ..Default::default()
        });
        let mut stream = self.client.create_image(Some(opts), None, credentials);
        while let Some(item) = stream.next().await {
            let pull_error = |message: String| RuntimeError::Pull {
                image: image.to_string(),
                message,
            };
            match item {
                Ok(info) => {
                    if let Some(err) = info.error {
                        return Err(pull_error(err));
                    }
                }
                Err(BollardError::DockerResponseServerError { message, .. }) => {
                    return Err(pull_error(message))
                }
                Err(BollardError::DockerStreamError { error }) => return Err(pull_error(error)),
                Err(e) => return Err(api(e)),
            }
        }
        // A pull that "succeeds" without the image is still a failure.
        self.client
            .inspect_image(image)
            .await
            .map(|_| ())
            .map_err(|e| RuntimeError::Pull {
                image: image.to_string(),
                message: e.to_string(),
            })
    }

    async fn ensure_volume(
        &self,
        name: &str,
        driver: Option<&str>,
        opts: &HashMap<String, String>,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        match self.client.inspect_volume(name).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api(e)),
        }
        self.client
            .create_volume(CreateVolumeOptions {
                name: name.to_string(),
                driver: driver.unwrap_or("local").to_string(),
                driver_opts: opts.clone(),
                labels: labels.clone(),
            })
            .await
            .map(|_| ())
            .map_err(api)
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        match self.client.remove_volume(name, None).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api(e)),
        }
    }

    async fn create(&self, s: &CreateSpec) -> Result<String, RuntimeError> {
        let mut exposed = HashMap::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for (port, proto, host) in &s.ports {
            let key = format!("{port}/{proto}");
            exposed.insert(key.clone(), HashMap::new());
            if s.network_mode == "bridge" || s.publish_ip.is_some() {
                bindings.insert(
                    key,
                    Some(vec![PortBinding {
                        host_ip: s.publish_ip.clone(),
                        host_port: Some(host.map(|h| h.to_string()).unwrap_or_default()),
                    }]),
                );
            }
        }
        let h = &s.host;
        let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        // A fixed address (and MAC) on the network named by the network mode. The MAC goes
        // on the container too: Docker before API 1.44 only reads it there.
        let networking_config = (s.ipv4_address.is_some() || s.mac_address.is_some()).then(|| {
            let endpoint = EndpointSettings {
                ipam_config: s.ipv4_address.as_ref().map(|ip| EndpointIpamConfig {
                    ipv4_address: Some(ip.clone()),
                    ..Default::default()
                }),
                mac_address: s.mac_address.clone(),
                ..Default::default()
            };
            NetworkingConfig {
                endpoints_config: HashMap::from([(s.network_mode.clone(), endpoint)]),
            }
        });
        let config = Config {
            image: Some(s.image.clone()),
            mac_address: s.mac_address.clone(),
            networking_config,
            network_disabled: h.disable_networking.then_some(true),
            tty: h.tty.then_some(true),
            open_stdin: h.open_stdin.then_some(true),
            cmd: s.cmd.clone(),
            entrypoint: s.entrypoint.clone(),
            env: Some(s.env.clone()),
            working_dir: s.working_dir.clone(),
            user: s.user.clone(),
            hostname: s.hostname.clone(),
            labels: Some(s.labels.clone()),
            exposed_ports: Some(exposed),
            stop_timeout: s.stop_timeout,
            healthcheck: s.healthcheck.as_ref().map(|h| HealthConfig {
                test: Some(h.test.clone()),
                interval: Some(h.interval_ns),
                timeout: Some(h.timeout_ns),
                retries: Some(h.retries),
                start_period: Some(h.start_period_ns),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                cpu_shares: s.cpu_shares,
                memory: s.memory_bytes,
                memory_reservation: s.memory_reservation_bytes,
                ulimits: Some(
                    s.ulimits
                        .iter()
                        .map(|(name, soft, hard)| ResourcesUlimits {
                            name: Some(name.clone()),
                            soft: Some(*soft),
                            hard: Some(*hard),
                        })
                        .collect(),
                ),
                readonly_rootfs: Some(s.readonly_rootfs),
                privileged: Some(s.privileged),
                binds: Some(s.binds.clone()),
                network_mode: Some(s.network_mode.clone()),
                port_bindings: Some(bindings),
                log_config: s
                    .log_config
                    .as_ref()
                    .map(|(driver, opts)| HostConfigLogConfig {
                        typ: Some(driver.clone()),
                        config: Some(opts.clone()),
                    }),
                links: some(&h.links),
                volumes_from: (!h.volumes_from.is_empty()).then(|| {
                    h.volumes_from
                        .iter()
                        .map(|(c, ro)| if *ro { format!("{c}:ro") } else { c.clone() })
                        .collect()
                }),
                extra_hosts: some(&h.extra_hosts),
                dns: some(&h.dns_servers),
                dns_search: some(&h.dns_search_domains),
                cap_add: some(&h.cap_add),
                cap_drop: some(&h.cap_drop),
                devices: (!h.devices.is_empty()).then(|| {
                    h.devices
                        .iter()
                        .map(|(host, ctr, perms)| DeviceMapping {
                            path_on_host: Some(host.clone()),
                            path_in_container: Some(ctr.clone()),
                            cgroup_permissions: Some(perms.clone()),
                        })
                        .collect()
                }),
                init: h.init.then_some(true),
                shm_size: h.shm_size_mib.map(|m| m * 1024 * 1024),
                tmpfs: (!h.tmpfs.is_empty()).then(|| h.tmpfs.iter().cloned().collect()),
                // Docker's MemorySwap is memory and swap together; it needs a hard limit.
                memory_swap: h
                    .max_swap_mib
                    .zip(s.memory_bytes)
                    .map(|(swap, mem)| mem + swap * 1024 * 1024),
                memory_swappiness: h.swappiness,
                security_opt: some(&h.security_options),
                sysctls: (!h.sysctls.is_empty()).then(|| h.sysctls.iter().cloned().collect()),
                pid_mode: h.pid_mode.clone(),
                ipc_mode: h.ipc_mode.clone(),
                cgroup_parent: s.cgroup_parent.clone(),
                storage_opt: s
                    .storage_gib
                    .filter(|_| self.storage_limits.load(Ordering::Relaxed))
                    .map(|g| HashMap::from([("size".to_string(), format!("{g}G"))])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = Some(CreateContainerOptions {
            name: s.name.clone(),
            platform: None,
        });
        let limited = config
            .host_config
            .as_ref()
            .is_some_and(|h| h.storage_opt.is_some());
        match self
            .client
            .create_container(options.clone(), config.clone())
            .await
        {
            Ok(r) => Ok(r.id),
            // "--storage-opt is not supported", "… supported only for overlay over xfs with
            // 'pquota' mount option": this driver cannot limit a container's disk.
            Err(BollardError::DockerResponseServerError { message, .. })
                if limited && message.contains("storage-opt") =>
            {
                if self.storage_limits.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        reason = message,
                        "ephemeralStorage is not enforced on this host: Docker's storage driver cannot limit a container's disk"
                    );
                }
                let mut config = config;
                if let Some(h) = config.host_config.as_mut() {
                    h.storage_opt = None;
                }
                let r = self
                    .client
                    .create_container(options, config)
                    .await
                    .map_err(api)?;
                Ok(r.id)
            }
            Err(e) => Err(api(e)),
        }
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.client
            .start_container::<String>(id, None)
            .await
            .map_err(api)
    }

    async fn inspect(&self, name_or_id: &str) -> Result<Option<Observed>, RuntimeError> {
        let c = match self.client.inspect_container(name_or_id, None).await {
            Ok(c) => c,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(api(e)),
        };
        let state = c.state.unwrap_or_default();
        let started = epoch(state.started_at.as_deref()).is_some();
        let running = state.running.unwrap_or(false);
        let mut bindings = Vec::new();
        let ip_address = c
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|nets| nets.values().find_map(|n| n.ip_address.clone()))
            .filter(|ip| !ip.is_empty());
        for (key, list) in c.network_settings.and_then(|n| n.ports).unwrap_or_default() {
            let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            let Ok(container_port) = port.parse::<u16>() else {
                continue;
            };
            for b in list.unwrap_or_default() {
                if let Some(host_port) = b.host_port.and_then(|p| p.parse::<u16>().ok()) {
                    bindings.push(Binding {
                        bind_ip: b.host_ip.unwrap_or_else(|| "0.0.0.0".into()),
                        container_port,
                        host_port,
                        protocol: proto.to_string(),
                    });
                }
            }
        }
        bindings
            .sort_by(|a, b| (a.container_port, &a.bind_ip).cmp(&(b.container_port, &b.bind_ip)));
        let health = state.health.and_then(|h| h.status).and_then(|s| match s {
            HealthStatusEnum::HEALTHY => Some("healthy".to_string()),
            HealthStatusEnum::UNHEALTHY => Some("unhealthy".to_string()),
            HealthStatusEnum::STARTING => Some("starting".to_string()),
            _ => None,
        });
        Ok(Some(Observed {
            id: c.id.unwrap_or_default(),
            running,
            started,
            exit_code: (!running && started).then_some(state.exit_code.unwrap_or(0)),
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.filter(|e| !e.is_empty()),
            health,
            bindings,
            image_id: c.image,
            labels: c.config.and_then(|c| c.labels).unwrap_or_default(),
            finished_at: if running {
                None
            } else {
                epoch(state.finished_at.as_deref())
            },
            started_at: epoch(state.started_at.as_deref()),
            ip_address,
        }))
    }

    async fn stop(&self, id: &str, timeout_s: i64) -> Result<(), RuntimeError> {
        match self
            .client
            .stop_container(id, Some(StopContainerOptions { t: timeout_s }))
            .await
        {
            Ok(()) => Ok(()),
            // 304: already stopped; 404: already gone.
            Err(BollardError::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(api(e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .client
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: false,
                    link: false,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api(e)),
        }
    }

    async fn list(&self, label: &str, value: &str) -> Result<Vec<Listed>, RuntimeError> {
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![format!("{label}={value}")]);
        let list = self
            .client
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters,
                ..Default::default()
            }))
            .await
            .map_err(api)?;
        Ok(list
            .into_iter()
            .map(|c| Listed {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                labels: c.labels.unwrap_or_default(),
                running: c.state.as_deref() == Some("running"),
            })
            .collect())
    }

    async fn output(
        &self,
        id: &str,
        since_ns: i64,
        follow: bool,
    ) -> Result<OutputLines, RuntimeError> {
        if let Some(path) = self.json_log(id).await {
            let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
            let (client, id) = (self.client.clone(), id.to_string());
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                // Gone means stopped; a failed question is asked again, a few times (the
                // engine restarting), but not forever (the agent shutting down). Nobody
                // reading any more also ends it.
                let failures = std::cell::Cell::new(0u32);
                let watcher = tx.clone();
                let running = || {
                    if watcher.is_closed() {
                        return false;
                    }
                    handle.block_on(async {
                        match client.inspect_container(&id, None).await {
                            Ok(c) => {
                                failures.set(0);
                                c.state.and_then(|s| s.running).unwrap_or(false)
                            }
                            Err(e) if is_not_found(&e) => false,
                            Err(_) => {
                                failures.set(failures.get() + 1);
                                failures.get() < 5
                            }
                        }
                    })
                };
                crate::jsonfile::read(&path, since_ns, follow, &running, &mut |line| {
                    tx.blocking_send(line).is_ok()
                });
            });
            let lines = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
            return Ok(Box::pin(lines));
        }
        let opts = LogsOptions::<String> {
            follow,
            stdout: true,
            stderr: true,
            timestamps: true,
            since: since_ns.div_euclid(1_000_000_000),
            ..Default::default()
        };
        let frames = self.client.logs(id, Some(opts));
        // A frame is one line, or a piece of a long one (Docker cuts lines at 16 KiB and stamps
        // each piece); pieces are joined until a newline ends the line. A line takes the time
        // of its last piece, so resuming after it skips all of it.
        let mut partial = String::new();
        let lines = frames.filter_map(move |frame| {
            let out = match frame {
                Err(e) => Some(Err(api(e))),
                Ok(f) => {
                    let bytes = match f {
                        LogOutput::StdOut { message }
                        | LogOutput::StdErr { message }
                        | LogOutput::Console { message }
                        | LogOutput::StdIn { message } => message,
                    };
                    let text = String::from_utf8_lossy(&bytes);
                    match split_timestamp(&text) {
                        None => None,
                        Some((time_ns, rest)) => {
                            let done = rest.ends_with('\n');
                            partial.push_str(rest.strip_suffix('\n').unwrap_or(rest));
                            if done {
                                let text = std::mem::take(&mut partial);
                                let text =
                                    text.strip_suffix('\r').map(str::to_string).unwrap_or(text);
                                Some(Ok(OutputLine { time_ns, text }))
                            } else {
                                None
                            }
                        }
                    }
                }
            };
            futures::future::ready(out)
        });
        Ok(Box::pin(lines))
    }

    async fn stats(&self, id: &str) -> Result<serde_json::Value, RuntimeError> {
        let mut s = self.client.stats(
            id,
            Some(bollard::container::StatsOptions {
                stream: false,
                one_shot: false,
            }),
        );
        match s.next().await {
            Some(Ok(stats)) => {
                serde_json::to_value(stats).map_err(|e| RuntimeError::Api(e.to_string()))
            }
            Some(Err(e)) => Err(api(e)),
            None => Ok(serde_json::Value::Null),
        }
    }

    async fn bridge_gateway(&self) -> Result<Option<String>, RuntimeError> {
        let n = self
            .client
            .inspect_network::<String>("bridge", None)
            .await
            .map_err(api)?;
        // Docker leaves the gateway out when it is the default: the subnet's first address.
        let configs = n.ipam.and_then(|i| i.config).unwrap_or_default();
        Ok(configs.into_iter().find_map(|c| {
            c.gateway.filter(|g| !g.is_empty()).or_else(|| {
                let subnet = c.subnet?;
                let net: std::net::Ipv4Addr = subnet.split_once('/')?.0.parse().ok()?;
                Some(std::net::Ipv4Addr::from(u32::from(net) + 1).to_string())
            })
        }))
    }

    async fn log_drivers(&self) -> Result<Vec<String>, RuntimeError> {
        let info = self.client.info().await.map_err(api)?;
        Ok(info.plugins.and_then(|p| p.log).unwrap_or_default())
    }

    async fn ensure_pause_image(&self) -> Result<(), RuntimeError> {
        match self.client.inspect_image(crate::pause::IMAGE).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api(e)),
        }
        if !cfg!(target_arch = "x86_64") {
            return Err(RuntimeError::Api(format!(
                "the pause image {} is made for x86_64 only, not {}",
                crate::pause::IMAGE,
                std::env::consts::ARCH
            )));
        }
        // `docker import -`: the body is the image's root filesystem.
        let opts = CreateImageOptions {
            from_src: "-",
            repo: crate::pause::REPO,
            tag: crate::pause::TAG,
            ..Default::default()
        };
        let tar = bytes::Bytes::from(crate::pause::image_tar());
        let mut stream = self.client.create_image(Some(opts), Some(tar), None);
        while let Some(item) = stream.next().await {
            item.map_err(api)?;
        }
        self.client
            .inspect_image(crate::pause::IMAGE)
            .await
            .map(|_| ())
            .map_err(api)
    }

    async fn ensure_network(
        &self,
        name: &str,
        subnet: &str,
        gateway: &str,
        labels: &HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        match self.client.inspect_network::<String>(name, None).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api(e)),
        }
        let opts = CreateNetworkOptions {
            name: name.to_string(),
            check_duplicate: true,
            driver: "bridge".to_string(),
            ipam: Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(subnet.to_string()),
                    gateway: Some(gateway.to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            labels: labels.clone(),
            ..Default::default()
        };
        match self.client.create_network(opts).await {
            Ok(_) => Ok(()),
            // 409: another task's loop made it meanwhile.
            Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(api(e)),
        }
    }

    async fn readdress(
        &self,
        id: &str,
        network: &str,
        ip: &str,
        mac: &str,
        name: &str,
    ) -> Result<(), RuntimeError> {
        self.client
            .disconnect_network(
                network,
                DisconnectNetworkOptions {
                    container: id,
                    force: true,
                },
            )
            .await
            .map_err(api)?;
        self.client
            .connect_network(
                network,
                ConnectNetworkOptions {
                    container: id,
                    endpoint_config: EndpointSettings {
                        ipam_config: Some(EndpointIpamConfig {
                            ipv4_address: Some(ip.to_string()),
                            ..Default::default()
                        }),
                        // Docker 20.10 makes it from the address (the same one); later
                        // engines take it here.
                        mac_address: Some(mac.to_string()),
                        ..Default::default()
                    },
                },
            )
            .await
            .map_err(api)?;
        self.client
            .rename_container(id, RenameContainerOptions { name })
            .await
            .map_err(api)
    }

    async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        match self.client.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api(e)),
        }
    }

    async fn apply_firewall(&self, container_id: &str, ruleset: &str) -> Result<(), RuntimeError> {
        let c = self
            .client
            .inspect_container(container_id, None)
            .await
            .map_err(api)?;
        let pid = c
            .state
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| RuntimeError::Api(format!("container {container_id} is not running")))?;
        let failed = |e: String| {
            RuntimeError::Api(format!(
                "iptables-restore in the network namespace of container {container_id}: {e}"
            ))
        };
        let mut child = tokio::process::Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "iptables-restore"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("cannot run nsenter: {e}")))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| failed("no stdin".into()))?;
        let input = ruleset.as_bytes().to_vec();
        let run = async move {
            // A write refused because the command exited early shows in its status and stderr.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
            child.wait_with_output().await
        };
        let out = tokio::time::timeout(FIREWALL_TIMEOUT, run)
            .await
            .map_err(|_| failed(format!("no answer in {} s", FIREWALL_TIMEOUT.as_secs())))?
            .map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            return Err(failed(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    async fn ensure_task_cgroup(
        &self,
        task_id: &str,
        cpu_units: Option<u32>,
        memory_mib: Option<u32>,
    ) -> Result<Option<String>, RuntimeError> {
        let Some(cgroups) = &self.cgroups else {
            return Ok(None);
        };
        if !crate::cgroup::wanted(cpu_units, memory_mib) {
            return Ok(None);
        }
        // A cgroupfs path is a cgroup parent only to the cgroupfs driver (systemd's wants a
        // slice, and would refuse every container of the task).
        let driver = self
            .cgroup_driver
            .get_or_try_init(|| async {
                let info = self.client.info().await.map_err(api)?;
                Ok::<_, RuntimeError>(
                    info.cgroup_driver
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                )
            })
            .await?;
        if driver != "cgroupfs" {
            return Ok(cgroups.cannot(&format!(
                "Docker's cgroup driver is {driver:?}, not cgroupfs"
            )));
        }
        cgroups.ensure(task_id, cpu_units, memory_mib).await
    }

    async fn remove_task_cgroup(&self, task_id: &str) {
        if let Some(cgroups) = &self.cgroups {
            cgroups.remove(task_id).await;
        }
    }
}
