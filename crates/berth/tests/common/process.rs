//! The real `berth` binary as a child process: its banner read for the endpoint, the
//! registry's address and the admin credentials.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Proc {
    pub child: Child,
    pub endpoint: String,
    /// `host:port` of the registry's `/v2/` listener.
    pub registry: String,
    pub ak: String,
    pub sk: String,
}

/// Runs `berth ARGS --data-dir DIR` and reads the endpoint and credentials it prints.
pub fn spawn(args: &[&str], dir: &std::path::Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        // Tests run side by side: each registry on a port of its own.
        .args(["--registry-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .env(
            "BERTH_LOG",
            std::env::var("BERTH_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut endpoint, mut ak, mut sk) = (String::new(), String::new(), String::new());
    let mut registry = String::new();
    for _ in 0..30 {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(v) = line.strip_prefix("Registry on ") {
            registry = v.split(':').take(2).collect::<Vec<_>>().join(":");
        } else if let Some(v) = line.strip_prefix("export AWS_ACCESS_KEY_ID=") {
            ak = v.into();
        } else if let Some(v) = line.strip_prefix("export AWS_SECRET_ACCESS_KEY=") {
            sk = v.into();
        } else if let Some(v) = line.strip_prefix("export AWS_ENDPOINT_URL=") {
            endpoint = v.into();
            break;
        }
    }
    assert!(
        !endpoint.is_empty() && !ak.is_empty() && !sk.is_empty(),
        "berth {args:?} printed its endpoint and credentials"
    );
    std::thread::spawn(move || lines.for_each(drop));
    Proc {
        child,
        endpoint,
        registry,
        ak,
        sk,
    }
}

/// A failing test leaves no server behind.
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when this goes (a failing test leaves no agent behind).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
