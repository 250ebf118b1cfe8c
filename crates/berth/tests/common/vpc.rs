//! Helpers of the tests of `awsvpc` tasks: HTTP from this host to a task's address, a task's
//! attachment details, and requests from inside a task's containers.

use serde_json::Value;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// `GET /` at `ip:port`: the body, or why not (refused, timed out).
pub fn get(ip: &str, port: u16) -> Result<String, String> {
    get_path(ip, port, "/")
}

/// `GET path` at `ip:port`: the whole answer, or why not.
pub fn get_path(ip: &str, port: u16, path: &str) -> Result<String, String> {
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(1500))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Whether `GET ip:port` answers `hello` (an address nothing here holds may still accept a
/// connection on the way out of this machine, so only the page counts).
pub fn answers(ip: &str, port: u16) -> bool {
    get(ip, port).is_ok_and(|b| b.contains("hello"))
}

/// Waits until `GET ip:port` answers `hello`, or panics after `secs`.
pub async fn reachable(ip: &str, port: u16, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while Instant::now() < deadline {
        match get(ip, port) {
            Ok(body) if body.contains("hello") => return,
            Ok(body) => last = body,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{ip}:{port} did not answer within {secs} s: {last}");
}

pub fn detail(task: &Value, name: &str) -> Option<String> {
    task["attachments"][0]["details"]
        .as_array()?
        .iter()
        .find(|d| d["name"] == name)
        .and_then(|d| d["value"].as_str())
        .map(str::to_string)
}

/// `docker exec` in the task's container `name`: `wget` of `url`, the body or the error.
pub fn wget_from(task: &Value, name: &str, url: &str) -> Result<String, String> {
    let id = task["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["runtimeId"].as_str())
        .unwrap()
        .to_string();
    let out = std::process::Command::new("docker")
        // busybox wget -T crashes; its timeout applet bounds the wait instead.
        .args(["exec", &id, "timeout", "3", "wget", "-q", "-O", "-", url])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A server whose public addresses are a loopback block of the test's own, one agent on the
/// real Docker Engine (`configure` makes it what the test needs), the AWS CLI, and the
/// cleanup of what the test makes in Docker.
pub struct Fixture {
    pub server: super::TestServer,
    pub agent: super::TestAgent,
    pub instance: String,
    pub cli: String,
    /// Removes what the test made in Docker when dropped, also when the test failed.
    pub docker: Cleanup,
    _agent_dir: tempfile::TempDir,
}

impl Fixture {
    /// `None` where a test opts out of Docker or the AWS CLI.
    pub async fn start(
        public: &str,
        clusters: &[&str],
        configure: impl FnOnce(&mut berth_agent::AgentConfig),
    ) -> Option<Fixture> {
        if !super::docker_available() {
            return None;
        }
        let cli = super::aws_cli()?;
        let server = super::TestServer::start_config(
            tempfile::tempdir().unwrap(),
            None,
            Default::default(),
            berth_control::Config {
                agent_timeout: Duration::from_secs(15),
                public_ips: berth_model::cidr::Cidr::parse(public).unwrap(),
                ..Default::default()
            },
        )
        .await;
        for c in clusters {
            server
                .ok("CreateCluster", serde_json::json!({"clusterName": c}))
                .await;
        }
        let agent_dir = tempfile::tempdir().unwrap();
        let mut cfg = super::TestAgent::config(&server, agent_dir.path());
        configure(&mut cfg);
        let agent = super::TestAgent::start(&server, cfg).await;
        let instance = super::wait_joined(&agent).await;
        Some(Fixture {
            server,
            agent,
            docker: Cleanup::new(instance.clone()),
            instance,
            cli,
            _agent_dir: agent_dir,
        })
    }

    /// `aws ec2 ARGS` against the server; panics with the CLI's error.
    pub fn ec2(&self, args: &[&str]) -> Value {
        super::aws_json(
            &self.cli,
            &self.server,
            &self.server.secret_key,
            "ec2",
            args,
        )
        .unwrap_or_else(|e| panic!("aws ec2 {args:?}: {e}"))
    }

    pub async fn finish(self) {
        self.agent.stop().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The cleanup removes the containers and networks when dropped.
    }
}

/// What an `awsvpc` test made in Docker: its agent's containers and its subnets' networks,
/// removed when this is dropped, also when the test failed half way (a network left behind
/// would overlap the next run's).
pub struct Cleanup {
    instance: String,
    pub subnets: Vec<String>,
}

impl Cleanup {
    pub fn new(instance: String) -> Cleanup {
        Cleanup {
            instance,
            subnets: Vec::new(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        super::docker_cleanup(&self.instance);
        for s in &self.subnets {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", &format!("berth-{s}")])
                .output();
        }
    }
}
