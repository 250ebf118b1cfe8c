//! The human CLI: `berth <noun> <verb>`, speaking the same signed API as the AWS CLI (through
//! `berth-client`), printing tables for people and the API's own objects for scripts.
//!
//! Exit codes: 0 done; 1 an error (the service's exception name and message, or why the server
//! could not be reached, with the fix); 2 a usage error (clap's); 3 a wait that ran out of time
//! (`deploy`, `scale --wait`, `run --wait`).

/// `println!` for command output: a reader that went away (`berth task ls | head -1`) ends the
/// command quietly instead of a panic.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::render::out(format_args!($($t)*))
    };
}

mod deploy;
mod ecs;
mod lb;
mod logs;
mod push;
mod registry;
pub mod render;
mod top;

use berth_client::{Api, Client, ClientError, Flags};
use clap::{Args, Subcommand};
use render::Output;
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

/// What every human command takes: where to call, as whom, and how to print.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// A profile of ~/.aws/credentials and ~/.aws/config (default: the environment's key, then
    /// AWS_PROFILE's profile or `default`, then a local `berth up`'s key).
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// The region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's, us-east-1).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// The server (default: AWS_ENDPOINT_URL, the profile's endpoint_url, then a local
    /// `berth up`'s http://127.0.0.1:7060).
    #[arg(long, global = true)]
    pub endpoint_url: Option<String>,
    /// `table` for people, `json` (the API's objects) or `text` (tab-separated) for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    pub output: Output,
    /// The cluster.
    #[arg(
        long,
        short = 'c',
        global = true,
        default_value = "default",
        env = "BERTH_CLUSTER"
    )]
    pub cluster: String,
}

/// A noun's verb, with the flags every human command takes.
#[derive(Args, Debug)]
pub struct With<V: Subcommand> {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub verb: V,
}

/// `berth logs`' arguments, with the flags every human command takes.
#[derive(Args, Debug)]
pub struct LogsCommand {
    #[command(flatten)]
    pub global: Global,
    #[command(flatten)]
    pub args: logs::LogsArgs,
}

/// One noun and its verb.
#[derive(Subcommand, Debug)]
pub enum Noun {
    /// Clusters: ls, describe, create, rm.
    Cluster(With<ecs::ClusterVerb>),
    /// Services: ls, describe, ps, scale, deploy, events, create, rm.
    Service(With<ecs::ServiceVerb>),
    /// Tasks: ls, describe, run, stop.
    Task(With<ecs::TaskVerb>),
    /// Container instances: ls, describe, drain, activate.
    Instance(With<ecs::InstanceVerb>),
    /// Task definitions: ls, describe, rm.
    Taskdef(With<ecs::TaskdefVerb>),
    /// Image repositories: ls, create, rm.
    Repo(With<registry::RepoVerb>),
    /// Images of a repository: ls, push, rm.
    Image(With<registry::ImageVerb>),
    /// Load balancers: ls, describe, listeners, targets, rm.
    Lb(With<lb::LbVerb>),
    /// A task's or a service's container logs (awslogs), optionally followed.
    Logs(LogsCommand),
    /// CPU and memory of the cluster's running tasks (or services), from Container Insights.
    Top(TopCommand),
}

/// `berth top`'s arguments, with the flags every human command takes.
#[derive(Args, Debug)]
pub struct TopCommand {
    #[command(flatten)]
    pub global: Global,
    #[command(flatten)]
    pub args: top::TopArgs,
}

impl Noun {
    fn global(&self) -> &Global {
        match self {
            Noun::Cluster(w) => &w.global,
            Noun::Service(w) => &w.global,
            Noun::Task(w) => &w.global,
            Noun::Instance(w) => &w.global,
            Noun::Taskdef(w) => &w.global,
            Noun::Repo(w) => &w.global,
            Noun::Image(w) => &w.global,
            Noun::Lb(w) => &w.global,
            Noun::Logs(l) => &l.global,
            Noun::Top(t) => &t.global,
        }
    }
}

/// What a command has to work with.
pub struct Ctx {
    pub client: Client,
    pub output: Output,
    pub cluster: String,
}

impl Ctx {
    pub async fn ecs<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: &str,
        req: &Req,
    ) -> Result<Resp, ClientError> {
        self.client.call(Api::Ecs, op, req).await
    }

    pub async fn ecr<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: &str,
        req: &Req,
    ) -> Result<Resp, ClientError> {
        self.client.call(Api::Ecr, op, req).await
    }

    pub async fn cloudwatch<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: &str,
        req: &Req,
    ) -> Result<Resp, ClientError> {
        self.client.call(Api::CloudWatch, op, req).await
    }

    pub async fn logs<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: &str,
        req: &Req,
    ) -> Result<Resp, ClientError> {
        self.client.call(Api::Logs, op, req).await
    }
}

/// An error a command ends with, and the exit code it means.
#[derive(Debug)]
pub struct Failed {
    pub code: i32,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failed {
    fn from(e: E) -> Failed {
        Failed {
            code: 1,
            error: e.into(),
        }
    }
}

/// A wait that ran out of time.
pub fn timed_out(what: String) -> Failed {
    Failed {
        code: 3,
        error: anyhow::anyhow!(what),
    }
}

/// Runs one human command; the exit code.
pub async fn run(noun: Noun, berth_data_dir: &Path) -> i32 {
    let global = noun.global().clone();
    let flags = Flags {
        profile: global.profile.clone(),
        region: global.region.clone(),
        endpoint_url: global.endpoint_url.clone(),
    };
    let client = match Client::from_environment(&flags, berth_data_dir) {
        Ok(c) => c,
        Err(e) => return report(e.into()),
    };
    let ctx = Ctx {
        client,
        output: global.output,
        cluster: global.cluster,
    };
    let result = match noun {
        Noun::Cluster(w) => ecs::cluster(&ctx, w.verb).await,
        Noun::Service(w) => ecs::service(&ctx, w.verb).await,
        Noun::Task(w) => ecs::task(&ctx, w.verb).await,
        Noun::Instance(w) => ecs::instance(&ctx, w.verb).await,
        Noun::Taskdef(w) => ecs::taskdef(&ctx, w.verb).await,
        Noun::Repo(w) => registry::repo(&ctx, w.verb).await,
        Noun::Image(w) => registry::image(&ctx, w.verb).await,
        Noun::Lb(w) => lb::lb(&ctx, w.verb).await,
        Noun::Logs(l) => logs::run(&ctx, l.args).await,
        Noun::Top(t) => top::run(&ctx, t.args).await,
    };
    match result {
        Ok(()) => 0,
        Err(f) => report(f),
    }
}

/// Prints a failure for people, with the fix where there is one.
fn report(f: Failed) -> i32 {
    eprintln!("error: {:#}", f.error);
    if let Some(hint) = f.error.downcast_ref::<ClientError>().and_then(hint) {
        eprintln!("hint: {hint}");
    }
    f.code
}

/// What to do about an error, where that is clear.
fn hint(e: &ClientError) -> Option<String> {
    match e {
        ClientError::Unreachable { .. } => Some(
            "is the server running? `berth up` starts one on this machine; --endpoint-url or AWS_ENDPOINT_URL names another"
                .into(),
        ),
        ClientError::Api { code, .. } => match code.as_str() {
            "UnrecognizedClientException" | "AccessDeniedException" => Some(
                "the server does not know this key: use the export lines the server printed, or --profile".into(),
            ),
            "InvalidSignatureException" => Some(
                "the secret or the region does not match the server's: use the export lines the server printed (AWS_REGION too), or --region".into(),
            ),
            "ClusterNotFoundException" => {
                Some("name the cluster with --cluster (`berth cluster ls` lists them)".into())
            }
            "ServiceNotFoundException" => Some("`berth service ls` lists the cluster's services".into()),
            "LoadBalancerNotFound" => Some("`berth lb ls` lists the load balancers".into()),
            "TargetGroupNotFound" => Some("`berth lb targets LB` shows a load balancer's target groups".into()),
            _ => None,
        },
        _ => None,
    }
}
