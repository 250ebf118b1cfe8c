//! An etcd cluster of local processes on loopback ports: Debian's `etcd` binary started with
//! its data in a directory the caller owns, for tests and benchmarks. Members can be killed
//! and restarted one by one; every member is killed when the cluster is dropped, and dies
//! within a second of the process that started it (a watchdog shell beside each member), so
//! a test that crashes leaves no etcd behind.

use crate::StoreError;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a member may take to answer after it was started.
const START_WAIT: Duration = Duration::from_secs(30);

/// Berth's transactions can be larger than etcd's defaults allow (128 operations, 1.5 MiB):
/// the members are started with room for them.
pub const MAX_TXN_OPS: usize = 10_000;
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug)]
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
    watchdog: Option<Child>,
}

/// A running local etcd cluster.
#[derive(Debug)]
pub struct LocalEtcd {
    dir: PathBuf,
    members: Vec<Member>,
}

/// A free loopback port (bound and released: good enough for tests).
fn free_port() -> Result<u16, StoreError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| StoreError::Backend(format!("finding a free port: {e}")))
}

impl LocalEtcd {
    /// Starts `n` members with their data under `dir`, and waits until the cluster answers.
    pub fn start(dir: &Path, n: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("etcd's directory {}: {e}", dir.display())))?;
        let mut members = Vec::new();
        for i in 0..n {
            members.push(Member {
                name: format!("m{i}"),
                client: free_port()?,
                peer: free_port()?,
                child: None,
                watchdog: None,
            });
        }
        let mut cluster = LocalEtcd {
            dir: dir.to_path_buf(),
            members,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// `etcd://…` naming every member.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect()
    }

    fn spawn(&mut self, i: usize) -> Result<(), StoreError> {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let m = &self.members[i];
        let data = self.dir.join(&m.name);
        let log = std::fs::File::create(self.dir.join(format!("{}.log", m.name)))
            .map_err(|e| StoreError::Backend(format!("etcd's log file: {e}")))?;
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "berth-test"])
            .args(["--max-txn-ops", &MAX_TXN_OPS.to_string()])
            .args(["--max-request-bytes", &MAX_REQUEST_BYTES.to_string()])
            // Loopback: elections in well under a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                StoreError::Backend(format!(
                    "starting etcd ({e}): install Debian's etcd-server (apt-get install etcd-server)"
                ))
            })?;
        // A shell beside it kills it once this process is gone.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        self.members[i].child = Some(child);
        self.members[i].watchdog = watchdog;
        Ok(())
    }

    /// Waits until every running member answers its health check.
    fn wait_ready(&mut self) -> Result<(), StoreError> {
        let deadline = Instant::now() + START_WAIT;
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            loop {
                if health(self.members[i].client) {
                    break;
                }
                if let Some(Ok(Some(status))) = self.members[i].child.as_mut().map(|c| c.try_wait())
                {
                    return Err(StoreError::Backend(format!(
                        "etcd member {} exited ({status}); see {}",
                        self.members[i].name,
                        self.dir
                            .join(format!("{}.log", self.members[i].name))
                            .display()
                    )));
                }
                if Instant::now() > deadline {
                    return Err(StoreError::Backend(format!(
                        "etcd member {} did not become healthy within {START_WAIT:?}",
                        self.members[i].name
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Kills member `i` (SIGKILL), and its watchdog.
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        for mut c in [m.child.take(), m.watchdog.take()].into_iter().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data, and waits for it.
    pub fn restart(&mut self, i: usize) -> Result<(), StoreError> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready()
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// `sh -c WATCHDOG sh PARENT_PID MEMBER_PID`: kills the member once the parent is gone.
const WATCHDOG: &str = r#"while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 0.5; done
kill -9 "$2" 2>/dev/null"#;

/// Whether the member on `port` says it is healthy (`GET /health`, plain HTTP/1.0).
fn health(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("\"health\":\"true\"")
}
