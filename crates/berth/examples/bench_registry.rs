//! `bench/run registry`: `docker push` and `docker pull` of a 1 GiB image of four layers, against
//! the release `berth server`'s registry and against the reference registry (Debian's
//! `docker-registry`, CNCF distribution 2.8, filesystem storage, no auth) on loopback, in the
//! same run. Two rounds with fresh layers, the order of the two registries swapped in the
//! second; each figure is the sum over both rounds. Berth's peak resident memory is its
//! VmHWM at the end.
//! Last line: `registry: push_ratio=R pull_ratio=R peak_rss_mib=N` (Berth throughput over the
//! reference's: above 1 is faster).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LAYERS: usize = 4;
const LAYER_MIB: usize = 256;

fn sh(cmd: &str, docker_config: &std::path::Path) -> String {
    let out = Command::new("bash")
        .args(["-c", cmd])
        .env("DOCKER_CONFIG", docker_config)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_http(addr: &str) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on {addr}");
}

fn reference_registry(dir: &std::path::Path) -> (Child, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (Debian's package) is installed");
    wait_http(&addr);
    (child, addr)
}

async fn create_repository(b: &common::Berth, name: &str) {
    let body = format!("{{\"repositoryName\":\"{name}\"}}");
    let (status, bytes) = common::ecr_call_raw(
        &common::client(),
        &b.endpoint,
        &b.ak,
        &b.sk,
        "CreateRepository",
        &body,
    )
    .await;
    assert_eq!(status, 200, "CreateRepository: {bytes:?}");
}

fn vm_hwm_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

fn timed(what: &str, cmd: &str, cfg: &std::path::Path) -> f64 {
    let t = Instant::now();
    sh(cmd, cfg);
    let s = t.elapsed().as_secs_f64();
    println!("  {what}: {s:.1} s");
    s
}

#[tokio::main]
async fn main() {
    let bin = std::env::args()
        .nth(1)
        .expect("usage: bench_registry BERTH");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    let registry_port = free_port().to_string();
    let berth = common::spawn(
        &bin,
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--registry-listen",
            &format!("127.0.0.1:{registry_port}"),
        ],
        &dir.path().join("berth"),
    );
    let (mut reference, ref_addr) = reference_registry(&dir.path().join("reference"));
    let ours = berth.registry.clone();
    sh(
        &format!(
            "echo {} | docker login --username {} --password-stdin {ours}",
            berth.sk, berth.ak
        ),
        &cfg,
    );
    println!(
        "registry: {LAYERS} layers x {LAYER_MIB} MiB of random data; Berth on {ours}, reference (docker-registry {}) on {ref_addr}",
        sh("docker-registry --version 2>/dev/null | head -1 || true", &cfg).trim()
    );

    let (mut push, mut pull) = ([0.0f64; 2], [0.0f64; 2]); // [berth, reference]
    for round in 0..2 {
        // Fresh layers each round, so neither registry has seen them.
        let ctx = dir.path().join(format!("ctx{round}"));
        std::fs::create_dir_all(&ctx).unwrap();
        let mut dockerfile = String::from("FROM scratch\n");
        for l in 0..LAYERS {
            sh(
                &format!(
                    "head -c {} /dev/urandom > {}/layer{l}",
                    LAYER_MIB << 20,
                    ctx.display()
                ),
                &cfg,
            );
            dockerfile.push_str(&format!("COPY layer{l} /layer{l}\n"));
        }
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let repo = format!("bench{round}");
        create_repository(&berth, &repo).await;
        let local = format!("berth-bench/registry:{round}");
        sh(
            &format!("docker build -q -t {local} {}", ctx.display()),
            &cfg,
        );
        std::fs::remove_dir_all(&ctx).unwrap();
        let targets = [format!("{ours}/{repo}:1"), format!("{ref_addr}/{repo}:1")];
        for t in &targets {
            sh(&format!("docker tag {local} {t}"), &cfg);
        }
        println!("round {}:", round + 1);
        let order: [usize; 2] = if round == 0 { [0, 1] } else { [1, 0] };
        for &i in &order {
            let name = if i == 0 {
                "Berth push"
            } else {
                "reference push"
            };
            push[i] += timed(name, &format!("docker push -q {}", targets[i]), &cfg);
        }
        sh(
            &format!("docker rmi {local} {} {}", targets[0], targets[1]),
            &cfg,
        );
        for &i in &order {
            let name = if i == 0 {
                "Berth pull"
            } else {
                "reference pull"
            };
            pull[i] += timed(name, &format!("docker pull -q {}", targets[i]), &cfg);
            sh(&format!("docker rmi {}", targets[i]), &cfg);
        }
    }
    let rss = vm_hwm_mib(berth.child.id());
    let gib = (2 * LAYERS * LAYER_MIB) as f64 / 1024.0;
    println!(
        "push: Berth {:.0} MiB/s, reference {:.0} MiB/s; pull: Berth {:.0} MiB/s, reference {:.0} MiB/s ({gib:.0} GiB each way)",
        gib * 1024.0 / push[0],
        gib * 1024.0 / push[1],
        gib * 1024.0 / pull[0],
        gib * 1024.0 / pull[1]
    );
    berth.stop();
    let _ = reference.kill();
    let _ = reference.wait();
    println!(
        "registry: push_ratio={:.2} pull_ratio={:.2} peak_rss_mib={:.0}",
        push[1] / push[0],
        pull[1] / pull[0],
        rss
    );
}
