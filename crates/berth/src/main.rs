//! The `berth` binary: `berth server` runs the control plane; `berth up` runs everything one
//! machine needs. All the work is in the library crates; this file parses flags, opens the
//! store, wires the pieces and handles signals.

use anyhow::{Context, Result};
use berth_control::{http::Limits, Config, Control};
use berth_store::Embedded;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "A self-hosted container platform with Amazon ECS's API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the control plane: the ECS API on an embedded store.
    Server(ServerArgs),
    /// Run Berth on this machine: the server and a `default` cluster.
    Up(ServerArgs),
}

#[derive(Args, Debug, Clone)]
struct ServerArgs {
    /// Address the ECS API listens on.
    #[arg(long, default_value = "127.0.0.1:7060", env = "BERTH_LISTEN")]
    listen: SocketAddr,
    /// Where the store and credentials live (default: ~/.berth).
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The region in ARNs and the SigV4 scope requests must be signed for.
    #[arg(long, default_value = "us-east-1", env = "BERTH_REGION")]
    region: String,
    /// The account id in ARNs.
    #[arg(long, default_value = "000000000000", env = "BERTH_ACCOUNT_ID")]
    account_id: String,
    /// Development mode for your own CI: any well-formed SigV4 credentials are accepted and
    /// `POST /_berth/reset` wipes all state. Never use it for anything you want to keep.
    #[arg(long)]
    dev: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match cli.command {
        Command::Server(args) => rt.block_on(run(args, false)),
        Command::Up(args) => rt.block_on(run(args, true)),
    }
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".berth")
}

async fn run(args: ServerArgs, up: bool) -> Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    let store = Embedded::open(&data_dir.join("state.redb")).with_context(|| {
        format!(
            "opening the store in {} (is another berth server using it?)",
            data_dir.display()
        )
    })?;
    let config = Config {
        region: args.region.clone(),
        account_id: args.account_id.clone(),
        dev: args.dev,
    };
    let control = Control::new(Arc::new(store), config);

    let (key, created) = control
        .ensure_admin_key()
        .await
        .context("creating the admin key")?;
    let cred_path = data_dir.join("credentials");
    if created || !cred_path.exists() {
        write_credentials(&cred_path, &key.access_key_id, &key.secret_access_key)?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let endpoint = format!("http://{addr}");
    if up {
        control
            .create_cluster(berth_api::ecs::CreateClusterRequest {
                cluster_name: Some("default".into()),
                ..Default::default()
            })
            .await
            .context("creating the default cluster")?;
    }

    println!(
        "Berth {} listening on {endpoint} (region {}, data in {})",
        if args.dev {
            "server (DEV MODE)"
        } else {
            "server"
        },
        args.region,
        data_dir.display()
    );
    if created {
        println!(
            "Created the admin access key; it is also in {} (profile berth):",
            cred_path.display()
        );
    }
    println!("export AWS_ACCESS_KEY_ID={}", key.access_key_id);
    println!("export AWS_SECRET_ACCESS_KEY={}", key.secret_access_key);
    println!("export AWS_ENDPOINT_URL={endpoint}");
    println!(
        "export AWS_DEFAULT_REGION={} AWS_REGION={}",
        args.region, args.region
    );
    if up {
        println!("Try: aws ecs describe-clusters --clusters default");
    }
    tracing::info!(%endpoint, dev = args.dev, "serving");

    berth_control::http::serve(listener, control, Limits::default(), shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The AWS shared-credentials format, readable only by its owner.
fn write_credentials(path: &Path, id: &str, secret: &str) -> Result<()> {
    let text = format!("[berth]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n");
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
