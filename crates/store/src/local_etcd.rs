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
    /// Plain HTTP `/health` (and `/metrics`), whatever the client port speaks.
    metrics: u16,
    child: Option<Child>,
    watchdog: Option<Child>,
}

/// A running local etcd cluster.
#[derive(Debug)]
pub struct LocalEtcd {
    dir: PathBuf,
    members: Vec<Member>,
    tls: Option<MemberTls>,
}

/// TLS on the members' client port: their certificate and key (PEM; the certificate for
/// 127.0.0.1, usable as a client certificate too, as etcd's gateway presents it to its own
/// gRPC port), and the CA a client's certificate must be signed by (`--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct MemberTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
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
        Self::start_with(dir, n, None)
    }

    /// Like [`LocalEtcd::start`], with clients served over TLS when `tls` is given. The ports
    /// are free when picked but may be taken before etcd binds them (by a test beside this
    /// one): a cluster whose member exits at start is started again on new ports, up to three
    /// times.
    pub fn start_with(dir: &Path, n: usize, tls: Option<MemberTls>) -> Result<Self, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(dir, n, tls.clone()) {
                Err(StoreError::Backend(e)) if attempt < 3 && e.contains(" exited (") => {
                    // Its data dirs are half made: a fresh start needs them gone.
                    let _ = std::fs::remove_dir_all(dir);
                }
                other => return other,
            }
        }
    }

    fn start_once(dir: &Path, n: usize, tls: Option<MemberTls>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("etcd's directory {}: {e}", dir.display())))?;
        let mut members = Vec::new();
        for i in 0..n {
            members.push(Member {
                name: format!("m{i}"),
                client: free_port()?,
                peer: free_port()?,
                metrics: free_port()?,
                child: None,
                watchdog: None,
            });
        }
        let mut cluster = LocalEtcd {
            dir: dir.to_path_buf(),
            members,
            tls,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// `etcd://…` (`etcds://…` over TLS) naming every member.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        format!("{scheme}://{}", self.endpoints().join(","))
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
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let metrics = format!("http://127.0.0.1:{}", m.metrics);
        let mut etcd = Command::new("etcd");
        if let Some(t) = &self.tls {
            etcd.arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&t.client_ca);
        }
        let child = etcd
            .args(["--listen-metrics-urls", &metrics])
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
                if health(self.members[i].metrics) {
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

/// Certificates for tests of etcd over TLS, made with `openssl` in a directory: a CA, a
/// member's certificate (for 127.0.0.1) and a client's, each signed by the CA, and a second
/// CA that signed neither. Each pair is (certificate, key), PEM.
#[derive(Debug, Clone)]
pub struct Certs {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), StoreError> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| StoreError::Backend(format!("openssl ({e}): install Debian's openssl")))?;
    if !out.status.success() {
        return Err(StoreError::Backend(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

impl Certs {
    pub fn make(dir: &Path) -> Result<Certs, StoreError> {
        for ca in ["ca", "other"] {
            let (key, pem, subj) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN=berth test {ca}"),
            );
            openssl(
                dir,
                &[
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", &key,
                    "-out", &pem, "-subj", &subj,
                ],
            )?;
        }
        // etcd's gateway presents the member's certificate to its own gRPC port: it is a
        // client certificate too.
        for (name, usage) in [
            ("server", "serverAuth,clientAuth"),
            ("client", "clientAuth"),
        ] {
            std::fs::write(
                dir.join(format!("{name}.ext")),
                format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"),
            )
            .map_err(|e| StoreError::Backend(format!("writing {name}.ext: {e}")))?;
            let (key, csr, pem, ext, subj) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
                format!("/CN={name}"),
            );
            openssl(
                dir,
                &[
                    "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                    &subj,
                ],
            )?;
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &pem,
                ],
            )?;
        }
        Ok(Certs {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other.pem"),
            server: (dir.join("server.pem"), dir.join("server.key")),
            client: (dir.join("client.pem"), dir.join("client.key")),
        })
    }

    /// What a member serves with: its certificate, and this CA for clients'.
    pub fn member(&self) -> MemberTls {
        MemberTls {
            cert: self.server.0.clone(),
            key: self.server.1.clone(),
            client_ca: self.ca.clone(),
        }
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

/// Whether the member whose metrics listener is `port` says it is healthy (`GET /health`,
/// plain HTTP/1.0).
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
