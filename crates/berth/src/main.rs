//! The `berth` binary: `berth server` runs the control plane; `berth agent` runs one host's
//! tasks; `berth up` runs both for one machine. All the work is in the library crates; this file parses flags, opens the
//! store, wires the pieces and handles signals.

mod cli;
mod plan;

use anyhow::{Context, Result};
use berth_agent::AgentConfig;
use berth_control::{server, Config};
use berth_store::Embedded;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "A self-hosted container platform with Amazon ECS's API"
)]
struct Cli {
    /// How log lines are written to stderr: `text` (coloured only on a terminal) or `json`
    /// (one object a line, for log shippers).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "BERTH_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// Log lines on stderr as `format` says, at the level `BERTH_LOG` says (default `info`).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        // Colour escapes only where a person reads them.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Human(cli::Noun),
    /// Prints a shell's completion script: `berth completions bash > /etc/bash_completion.d/berth`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run the control plane: the ECS API on an embedded store.
    Server(ServerArgs),
    /// Run Berth on this machine: the server, a `default` cluster and an agent on the local
    /// Docker Engine.
    Up(UpArgs),
    /// Make this host a container instance of a cluster and run its tasks on the local Docker
    /// Engine.
    Agent(AgentArgs),
    /// Print a cluster's registration token (agents need it to join), asked of a server with
    /// the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment.
    JoinToken {
        /// The berth server, `http://host:port`.
        #[arg(long, env = "AWS_ENDPOINT_URL")]
        server: String,
        #[arg(long, default_value = "default")]
        cluster: String,
        #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
        region: String,
        /// `fargate`: the token of the pool of Fargate capacity instead of a cluster's.
        #[arg(long, value_enum, default_value = "ec2")]
        capacity: Capacity,
    },
    /// Reclaim Spot capacity: interrupt RUNNING FARGATE_SPOT tasks as AWS does (SIGTERM, then
    /// SIGKILL after their stopTimeout; stop code SpotInterruption), asked of a server with
    /// the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment.
    SpotInterrupt {
        /// The berth server, `http://host:port`.
        #[arg(long, env = "AWS_ENDPOINT_URL")]
        server: String,
        /// Only this cluster's tasks (default: every cluster's).
        #[arg(long)]
        cluster: Option<String>,
        /// Exactly this task (ARN or id).
        #[arg(long)]
        task: Option<String>,
        /// How many tasks to interrupt.
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
        region: String,
    },
    /// Fargate usage as Fargate bills it (vCPU-seconds and GB-seconds from the image pull to
    /// the stop, a minute at least) per service, cluster and in all, asked of a server with
    /// the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment.
    Usage {
        /// The berth server, `http://host:port`.
        #[arg(long, env = "AWS_ENDPOINT_URL")]
        server: String,
        /// Only this cluster (default: every cluster).
        #[arg(long)]
        cluster: Option<String>,
        /// `text` (a report for people) or `json` (every task's figures too).
        #[arg(long, default_value = "text")]
        output: String,
        #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
        region: String,
    },
    /// What if: where a workload would go on a cluster, and what would not fit, placing
    /// nothing. The cluster file is `{"instances": [{"id", "cpu", "memory", "attributes",
    /// "ports"}]}` or the JSON of `aws ecs describe-container-instances` (a live snapshot); the
    /// workload is `{"tasks": [{"name", "count", "cpu", "memory", "ports", "group",
    /// "placementConstraints", "placementStrategy"}]}`.
    Plan {
        #[arg(long)]
        cluster: PathBuf,
        #[arg(long)]
        workload: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Stop the tasks' containers when `berth up` exits (default: they keep running, and are
    /// adopted at the next start).
    #[arg(long)]
    stop_tasks_on_exit: bool,
    /// How long stopped containers stay before they are removed, in seconds.
    #[arg(long, default_value_t = 3600)]
    container_cleanup_after: u64,
}

#[derive(Args, Debug, Clone)]
struct AgentArgs {
    /// The berth server, `http://host:port`; for several servers on one store, each of them,
    /// comma-separated: the agent moves to the next when its server cannot be reached.
    #[arg(long, env = "BERTH_SERVER")]
    server: String,
    /// The cluster to join.
    #[arg(long, default_value = "default", env = "BERTH_CLUSTER")]
    cluster: String,
    /// The cluster's region (default: the server's own, its `--region`).
    #[arg(long, env = "BERTH_REGION")]
    region: Option<String>,
    /// The cluster's registration token (`berth join-token --cluster NAME` prints it; `berth
    /// up` keeps the default cluster's in its data dir as `join-token`). Needed only the
    /// first time.
    #[arg(long, env = "BERTH_JOIN_TOKEN")]
    token: Option<String>,
    /// A custom attribute, `name=value`; may be repeated.
    #[arg(long = "attribute", value_parser = parse_attribute)]
    attributes: Vec<(String, String)>,
    /// The `ecs.availability-zone` attribute.
    #[arg(long)]
    availability_zone: Option<String>,
    /// The `ecs.instance-type` attribute.
    #[arg(long)]
    instance_type: Option<String>,
    /// The Auto Scaling group this host belongs to: the capacity provider whose
    /// `autoScalingGroupArn` names the group places its tasks here (attribute
    /// `berth.auto-scaling-group`).
    #[arg(long)]
    auto_scaling_group: Option<String>,
    /// Where the agent keeps its identity (default: ~/.berth/agent).
    #[arg(long, env = "BERTH_AGENT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// MiB of memory kept away from tasks.
    #[arg(long, default_value_t = 0)]
    reserved_memory: i64,
    /// CPU units to offer (default: 1024 per core).
    #[arg(long)]
    cpu: Option<i32>,
    /// MiB of memory to offer (default: the host's, less --reserved-memory).
    #[arg(long)]
    memory: Option<i32>,
    /// Register as an EXTERNAL instance (id mi-…), for launchType EXTERNAL.
    #[arg(long)]
    external: bool,
    /// What this host is: `ec2`, a container instance of `--cluster`; or `fargate`, capacity
    /// that Berth manages and that runs the FARGATE tasks of every cluster (its token:
    /// `berth join-token --capacity fargate`).
    #[arg(long, value_enum, default_value = "ec2")]
    capacity: Capacity,
    /// How long stopped containers stay before they are removed, in seconds.
    #[arg(long, default_value_t = 3 * 3600)]
    container_cleanup_after: u64,
    /// Stop this instance's containers when the agent exits.
    #[arg(long)]
    stop_tasks_on_exit: bool,
    /// The task metadata endpoint's port, on the Docker bridge's gateway (0: any free port).
    #[arg(long, default_value_t = berth_agent::METADATA_PORT)]
    metadata_port: u16,
    /// Serve the agent's Prometheus `/metrics` on this address (e.g. 127.0.0.1:51680).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Seconds between samples of the running tasks' CPU, memory, network and storage use
    /// (Container Insights and AWS/ECS utilization); 0: never sampled.
    #[arg(long, default_value_t = 20)]
    stats_interval: u64,
}

/// The kinds of capacity an agent can be.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Capacity {
    Ec2,
    Fargate,
}

/// Makes `cfg` an agent of the pool of Fargate capacity.
fn fargate_capacity(cfg: &mut AgentConfig) {
    cfg.cluster = berth_control::FARGATE_POOL.to_string();
    cfg.attributes.insert(
        berth_control::CAPACITY_ATTRIBUTE.to_string(),
        "FARGATE".to_string(),
    );
}

fn parse_attribute(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("attribute '{s}' must be name=value"))
}

#[derive(Args, Debug, Clone)]
struct ServerArgs {
    /// Address the ECS API listens on.
    #[arg(long, default_value = "127.0.0.1:7060", env = "BERTH_LISTEN")]
    listen: SocketAddr,
    /// Where the store and credentials live (default: ~/.berth).
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The state store: the embedded one in the data dir (default), or an etcd cluster,
    /// `etcd://host:port[,host:port…]` (`etcds://…` over TLS, with `--etcd-ca`). Blobs, logs
    /// and metrics stay in the data dir.
    #[arg(long, env = "BERTH_STORE")]
    store: Option<String>,
    /// On etcd, the TTL (seconds) of the leader's lease: several servers share one etcd, one
    /// leads (runs the reconcilers), and another takes over within about this long of its end.
    #[arg(long, default_value_t = 5, env = "BERTH_LEADER_TTL", value_parser = clap::value_parser!(u64).range(2..=60))]
    leader_ttl: u64,
    /// Where the registry's blobs live (default: DATA_DIR/blobs). Several servers on one
    /// store need one directory they all reach (and one `--registry-key-file`).
    #[arg(long, env = "BERTH_BLOBS_DIR")]
    blobs_dir: Option<PathBuf>,
    /// etcd's user, when its authentication is on (the password comes from
    /// BERTH_ETCD_PASSWORD).
    #[arg(long, env = "BERTH_ETCD_USER", requires = "store")]
    etcd_user: Option<String>,
    /// For `etcds://`: the CA (PEM) that signed the etcd members' certificates.
    #[arg(long, env = "BERTH_ETCD_CA", requires = "store")]
    etcd_ca: Option<PathBuf>,
    /// A client certificate (PEM) for etcd, when it checks clients' (`--client-cert-auth`).
    #[arg(long, env = "BERTH_ETCD_CERT", requires_all = ["etcd_ca", "etcd_key"])]
    etcd_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "BERTH_ETCD_KEY", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// The home region: the one Berth's banner, CLI and agents use unless told otherwise.
    /// Every region in `--regions` is served too, each with its own state.
    #[arg(long, default_value = "us-east-1", env = "BERTH_REGION")]
    region: String,
    /// The regions served beside the home one, comma-separated (default: every region of
    /// AWS's commercial partition). A request signed for any other region is refused.
    #[arg(long, env = "BERTH_REGIONS", value_delimiter = ',', value_parser = parse_region)]
    regions: Option<Vec<String>>,
    /// The account id in ARNs.
    #[arg(long, default_value = "000000000000", env = "BERTH_ACCOUNT_ID")]
    account_id: String,
    /// Development mode for your own CI: any well-formed SigV4 credentials are accepted and
    /// `POST /_berth/reset` wipes all state. Never use it for anything you want to keep.
    #[arg(long)]
    dev: bool,
    /// Seconds without a poll after which an instance's agent counts as disconnected.
    #[arg(long, default_value_t = 60)]
    agent_timeout: u64,
    /// Seconds a STOPPED task stays describable before it is purged.
    #[arg(long, default_value_t = 3600)]
    task_retention: u64,
    /// Seconds between housekeeping passes: the purge of stopped tasks and of deregistered
    /// agents' presence, the registry's lifecycle policies, log and metric retention.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    housekeeping_interval: u64,
    /// Address the image registry (the OCI distribution protocol, `/v2/`) listens on.
    #[arg(long, default_value = "127.0.0.1:7070", env = "BERTH_REGISTRY_LISTEN")]
    registry_listen: SocketAddr,
    /// The file holding the registry's 256-bit encryption key as 64 hex characters (default:
    /// DATA_DIR/registry.key, created on first start).
    #[arg(long, env = "BERTH_REGISTRY_KEY_FILE")]
    registry_key_file: Option<PathBuf>,
    /// Let anyone pull from the registry without credentials.
    #[arg(long)]
    registry_anonymous_pull: bool,
    /// The address load balancers' listeners bind (each at its listener's port).
    #[arg(long, default_value = "0.0.0.0", env = "BERTH_LB_ADDRESS")]
    lb_address: std::net::IpAddr,
    /// The ports listeners may use, as LOW-HIGH (default: any).
    #[arg(long, value_parser = parse_port_range, env = "BERTH_LB_PORTS")]
    lb_ports: Option<(u16, u16)>,
    /// The host addresses `awsvpc` tasks with `assignPublicIp ENABLED` get, one each, as a
    /// CIDR block: agents publish a task's ports on its address. The default is loopback
    /// addresses, this host's own.
    #[arg(long, default_value = berth_control::DEFAULT_PUBLIC_IPS, value_parser = parse_cidr, env = "BERTH_PUBLIC_IPS")]
    public_ips: berth_model::cidr::Cidr,
    /// Spot chaos for testing: the share of RUNNING FARGATE_SPOT tasks interrupted a minute,
    /// on average (e.g. 0.1); 0 interrupts only what `berth spot-interrupt` reclaims.
    #[arg(long, default_value_t = 0.0, env = "BERTH_SPOT_INTERRUPTION_RATE")]
    spot_interruption_rate: f64,
}

fn parse_cidr(s: &str) -> Result<berth_model::cidr::Cidr, String> {
    berth_model::cidr::Cidr::parse(s)
        .ok_or_else(|| format!("'{s}' is not an IPv4 CIDR block (a.b.c.d/n, its network address)"))
}

/// `LOW-HIGH`, both ports, LOW ≤ HIGH.
fn parse_region(s: &str) -> Result<String, String> {
    if berth_control::regions::well_formed(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a region name (like us-east-1 or eu-west-1)"
        ))
    }
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("'{s}' is not a port range LOW-HIGH"))?;
    let low: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("'{a}' is not a port"))?;
    let high: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("'{b}' is not a port"))?;
    if low == 0 || low > high {
        return Err(format!(
            "'{s}' is not a port range from 1 to 65535, LOW ≤ HIGH"
        ));
    }
    Ok((low, high))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = match cli.command {
        Command::Human(noun) => {
            let data_dir = std::env::var_os("BERTH_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(default_data_dir);
            let code = rt.block_on(cli::run(noun, &data_dir));
            drop(rt);
            std::process::exit(code);
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "berth", &mut std::io::stdout());
            Ok(())
        }
        Command::Server(args) => rt.block_on(run(args, None)),
        Command::Up(args) => rt.block_on(run(args.server.clone(), Some(args))),
        Command::Agent(args) => rt.block_on(agent(args)),
        Command::Plan { cluster, workload } => plan::run(&cluster, &workload),
        Command::Usage {
            server,
            cluster,
            output,
            region,
        } => rt.block_on(usage(&server, cluster, &output, &region)),
        Command::SpotInterrupt {
            server,
            cluster,
            task,
            count,
            region,
        } => rt.block_on(spot_interrupt(&server, cluster, task, count, &region)),
        Command::JoinToken {
            server,
            cluster,
            region,
            capacity,
        } => {
            let cluster = match capacity {
                Capacity::Ec2 => cluster,
                Capacity::Fargate => berth_control::FARGATE_POOL.to_string(),
            };
            rt.block_on(join_token(&server, &cluster, &region))
        }
    };
    // Errors are for people: the message and its causes, without a backtrace.
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".berth")
}

/// The key of the environment's `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
fn env_key() -> Result<(String, String)> {
    let (Ok(ak), Ok(sk)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) else {
        anyhow::bail!("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to a Berth user's key (the export lines `berth server` printed)");
    };
    Ok((ak, sk))
}

async fn join_token(server: &str, cluster: &str, region: &str) -> Result<()> {
    let (ak, sk) = env_key()?;
    let token = berth_agent::client::ServerClient::new(server)
        .join_token(cluster, &ak, &sk, region)
        .await
        .with_context(|| format!("asking {server} for cluster {cluster}'s token"))?;
    println!("{token}");
    Ok(())
}

/// A signed call of one of the server's admin paths, with the environment's key.
async fn admin_call(
    server: &str,
    path: &str,
    body: serde_json::Value,
    region: &str,
) -> Result<serde_json::Value> {
    let (ak, sk) = env_key()?;
    Ok(berth_agent::client::ServerClient::new(server)
        .admin_call(path, &body, (&ak, &sk, region))
        .await?)
}

async fn usage(server: &str, cluster: Option<String>, output: &str, region: &str) -> Result<()> {
    if output != "text" && output != "json" {
        anyhow::bail!("--output is text or json, not '{output}'");
    }
    let answer = admin_call(
        server,
        berth_control::http::USAGE_PATH,
        serde_json::json!({ "cluster": cluster }),
        region,
    )
    .await
    .with_context(|| format!("asking {server} for Fargate usage"))?;
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let r: berth_control::metering::Report = serde_json::from_value(answer)?;
    println!(
        "{:<48} {:>6} {:>14} {:>14}",
        "CLUSTER/GROUP", "TASKS", "VCPU-HOURS", "GB-HOURS"
    );
    let line = |name: &str, t: &berth_control::metering::Totals| {
        println!(
            "{:<48} {:>6} {:>14.4} {:>14.4}",
            name,
            t.tasks,
            t.vcpu_seconds / 3600.0,
            t.gb_seconds / 3600.0
        );
    };
    for (name, t) in &r.groups {
        line(name, t);
    }
    line("TOTAL", &r.total);
    Ok(())
}

async fn spot_interrupt(
    server: &str,
    cluster: Option<String>,
    task: Option<String>,
    count: usize,
    region: &str,
) -> Result<()> {
    let answer = admin_call(
        server,
        berth_control::http::SPOT_INTERRUPT_PATH,
        serde_json::json!({"cluster": cluster, "task": task, "count": count}),
        region,
    )
    .await
    .with_context(|| format!("asking {server} to interrupt Spot tasks"))?;
    for arn in answer["interrupted"].as_array().into_iter().flatten() {
        println!("{}", arn.as_str().unwrap_or_default());
    }
    Ok(())
}

/// The agent alone, against a server elsewhere.
async fn agent(args: AgentArgs) -> Result<()> {
    let runtime = docker().await?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_dir().join("agent"));
    let mut cfg = AgentConfig::new(&args.server, &args.cluster, data_dir);
    cfg.token = args.token;
    cfg.region = args.region;
    cfg.attributes = args.attributes.into_iter().collect();
    if let Some(group) = args.auto_scaling_group {
        if args.capacity == Capacity::Fargate {
            anyhow::bail!("--auto-scaling-group and --capacity fargate exclude each other");
        }
        cfg.attributes.insert(
            berth_control::AUTO_SCALING_GROUP_ATTRIBUTE.to_string(),
            group,
        );
    }
    cfg.availability_zone = args.availability_zone;
    cfg.instance_type = args.instance_type;
    cfg.reserved_memory = args.reserved_memory;
    cfg.cpu = args.cpu;
    cfg.memory = args.memory;
    cfg.external = args.external;
    cfg.cleanup_after = Duration::from_secs(args.container_cleanup_after);
    cfg.stop_tasks_on_exit = args.stop_tasks_on_exit;
    cfg.metadata_port = Some(args.metadata_port);
    cfg.metrics_listen = args.metrics_listen;
    cfg.stats_interval =
        (args.stats_interval > 0).then(|| Duration::from_secs(args.stats_interval));
    if args.capacity == Capacity::Fargate {
        if args.external {
            anyhow::bail!("--external and --capacity fargate exclude each other");
        }
        fargate_capacity(&mut cfg);
    }
    tracing::info!(server = cfg.server, cluster = cfg.cluster, "agent starting");
    berth_agent::run(cfg, runtime, shutdown_signal())
        .await
        .context("the agent stopped")?;
    tracing::info!("agent stopped");
    Ok(())
}

/// The local Docker Engine, or an error that says how to get one.
async fn docker() -> Result<Arc<dyn berth_agent::runtime::Runtime>> {
    match berth_agent::docker::Docker::connect().await {
        Ok(d) => Ok(Arc::new(d)),
        Err(e) => anyhow::bail!(
            "the Docker Engine is not reachable ({e}).\n\
             Berth runs tasks on Docker: start it (`sudo systemctl start docker`, or `sudo dockerd &`), \
             or point DOCKER_HOST at one (e.g. DOCKER_HOST=unix:///run/user/1000/docker.sock)."
        ),
    }
}

async fn run(args: ServerArgs, up: Option<UpArgs>) -> Result<()> {
    // `berth up` needs Docker; say so before anything else happens.
    let runtime = match &up {
        Some(_) => Some(docker().await?),
        None => None,
    };
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    let store: Arc<dyn berth_store::Store> = match &args.store {
        None => Arc::new(
            Embedded::open(&data_dir.join("state.redb")).with_context(|| {
                format!(
                    "opening the store in {} (is another berth server using it?)",
                    data_dir.display()
                )
            })?,
        ),
        Some(url) => {
            let mut options = berth_store::EtcdOptions::parse(url)?;
            if let Some(user) = &args.etcd_user {
                let password = std::env::var("BERTH_ETCD_PASSWORD").context(
                    "--etcd-user needs the password in the environment variable BERTH_ETCD_PASSWORD",
                )?;
                options.user = Some((user.clone(), password));
            }
            if let Some(ca) = &args.etcd_ca {
                options.tls = Some(berth_store::EtcdTls {
                    ca: ca.clone(),
                    client: args.etcd_cert.clone().zip(args.etcd_key.clone()),
                });
            }
            Arc::new(
                berth_store::Etcd::connect(options)
                    .await
                    .with_context(|| format!("connecting to the store at {url}"))?,
            )
        }
    };
    let config = Config {
        region: args.region.clone(),
        account_id: args.account_id.clone(),
        dev: args.dev,
        agent_timeout: Duration::from_secs(args.agent_timeout),
        task_retention: Duration::from_secs(args.task_retention),
        public_ips: args.public_ips,
        leader_ttl: Duration::from_secs(args.leader_ttl),
        // As the store suits: see the field.
        placement_lets_go: None,
    };
    if !berth_control::regions::well_formed(&args.region) {
        anyhow::bail!(
            "--region {:?} is not a region name (like us-east-1 or eu-west-1)",
            args.region
        );
    }
    let registry_listener = tokio::net::TcpListener::bind(args.registry_listen)
        .await
        .with_context(|| format!("binding the registry to {}", args.registry_listen))?;
    let registry_addr = registry_listener.local_addr()?;
    let key_file = args
        .registry_key_file
        .clone()
        .unwrap_or_else(|| data_dir.join("registry.key"));
    let blob_key = berth_registry::blobs::load_or_create_key(&key_file)
        .with_context(|| format!("reading the registry key {}", key_file.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let mut options = server::Options::new(config);
    if let Some(list) = args.regions.clone() {
        options.regions = server::Served::Only(list);
    }
    options.spot_interruption_rate = args.spot_interruption_rate;
    options.housekeeping_interval = Duration::from_secs(args.housekeeping_interval);
    options.elb = Some(berth_elb::Options {
        address: args.lb_address,
        ports: args.lb_ports,
    });
    options.storage = Some(server::Storage {
        blobs_dir: args.blobs_dir.clone(),
        dir: data_dir.clone(),
        blob_key,
        registry: berth_registry::Config {
            region: args.region.clone(),
            account_id: args.account_id.clone(),
            anonymous_pull: args.registry_anonymous_pull,
            ..Default::default()
        },
        registry_listener,
    });
    let server = server::Server::start(store, listener, options)
        .await
        .context("starting the server")?;
    let control = server.control.clone();
    let addr = server.addr;

    let (key, created) = control
        .ensure_admin_key()
        .await
        .context("creating the admin key")?;
    let cred_path = data_dir.join("credentials");
    let credentials = credentials_text(&key.access_key_id, &key.secret_access_key, &args.region);
    if created || std::fs::read_to_string(&cred_path).ok().as_deref() != Some(&credentials) {
        write_secret(&cred_path, &credentials)?;
    }
    let endpoint = format!("http://{addr}");
    let mut join_token = None;
    let mut fargate_token = None;
    if up.is_some() {
        control
            .create_cluster(
                &berth_control::Caller::from(&key),
                berth_api::ecs::CreateClusterRequest {
                    cluster_name: Some("default".into()),
                    ..Default::default()
                },
            )
            .await
            .context("creating the default cluster")?;
        let token = control
            .ensure_join_token("default")
            .await
            .context("creating the default cluster's join token")?;
        write_secret(&data_dir.join("join-token"), &format!("{token}\n"))?;
        join_token = Some(token);
        fargate_token = Some(
            control
                .ensure_join_token(berth_control::FARGATE_POOL)
                .await
                .context("creating the Fargate capacity's join token")?,
        );
    }

    println!(
        "Berth {} listening on {endpoint} (home region {}, serving {}; data in {})",
        if args.dev {
            "server (DEV MODE)"
        } else {
            "server"
        },
        args.region,
        match &args.regions {
            Some(list) => list.join(", "),
            None => "every AWS region".to_string(),
        },
        data_dir.display()
    );
    if created {
        println!(
            "Created the admin access key; it is also in {} (profile berth):",
            cred_path.display()
        );
    }
    println!(
        "Registry on {registry_addr}: aws ecr get-login-password | docker login --username AWS --password-stdin {registry_addr}"
    );
    println!("export AWS_ACCESS_KEY_ID={}", key.access_key_id);
    println!("export AWS_SECRET_ACCESS_KEY={}", key.secret_access_key);
    println!("export AWS_ENDPOINT_URL={endpoint}");
    println!(
        "export AWS_DEFAULT_REGION={} AWS_REGION={}",
        args.region, args.region
    );
    match &up {
        Some(_) => {
            println!("Try: aws ecs list-container-instances --cluster default");
            println!(
                "     aws ecs register-task-definition --family hello --container-definitions \
                 '[{{\"name\":\"hello\",\"image\":\"berth-test/busybox:latest\",\"memory\":32,\"command\":[\"sleep\",\"600\"]}}]'"
            );
            println!("     aws ecs run-task --task-definition hello");
            println!("(scripts/build-test-images builds berth-test/busybox:latest)");
        }
        None => println!(
            "Agents join with: berth agent --server {endpoint} --cluster NAME --token $(berth join-token --server {endpoint} --cluster NAME)"
        ),
    }
    tracing::info!(%endpoint, dev = args.dev, "serving");

    // The agents stop first, so their last reports reach the server. `berth up` runs two on
    // the local Docker: the default cluster's container instance, and Fargate capacity.
    let (agent_stop_tx, agent_stop_rx) = tokio::sync::watch::channel(false);
    let mut agents = Vec::new();
    if let (Some(up), Some(runtime)) = (up, runtime) {
        let mut ec2 = AgentConfig::new(&endpoint, "default", data_dir.join("agent"));
        ec2.token = join_token.clone();
        let mut fargate = AgentConfig::new(&endpoint, "default", data_dir.join("fargate-agent"));
        fargate_capacity(&mut fargate);
        fargate.token = fargate_token.clone();
        // One metadata endpoint port per agent: the second takes any free one.
        fargate.metadata_port = Some(0);
        for mut cfg in [ec2, fargate] {
            cfg.cleanup_after = Duration::from_secs(up.container_cleanup_after);
            cfg.stop_tasks_on_exit = up.stop_tasks_on_exit;
            let mut stop = agent_stop_rx.clone();
            agents.push(tokio::spawn(berth_agent::run(
                cfg,
                runtime.clone(),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )));
        }
    }
    shutdown_signal().await;
    let _ = agent_stop_tx.send(true);
    for agent in agents {
        match agent.await {
            Ok(Err(e)) => tracing::error!(error = %e, "an agent stopped with an error"),
            Err(e) => tracing::error!(error = %e, "an agent failed"),
            Ok(Ok(())) => {}
        }
    }
    drop(control);
    server.shutdown().await.context("the server task failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// The AWS shared-credentials format, with the home region Berth's CLI defaults to.
fn credentials_text(id: &str, secret: &str, region: &str) -> String {
    format!(
        "[berth]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\nregion = {region}\n"
    )
}

/// Writes a file only its owner can read, atomically.
fn write_secret(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
