//! The ECS nouns: clusters, services, tasks, container instances and task definitions.

use super::render::{self, age, cell, emit, emit_object, short, Output, Table};
use super::{deploy, timed_out, Ctx, Failed};
use anyhow::anyhow;
use berth_api::ecs::*;
use clap::Subcommand;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Failed>;

/// The most pages a listing follows (100 each): a bound, not a limit anyone meets.
const MAX_PAGES: usize = 10_000;

/// Every item of a paginated listing: `page(token)` answers one page and the next token.
pub async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<
        Output = std::result::Result<(Option<Vec<T>>, Option<String>), berth_client::ClientError>,
    >,
{
    let mut out = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let (items, next) = page(token).await?;
        out.extend(items.unwrap_or_default());
        match next {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(out),
        }
    }
    Err(anyhow!("the listing did not end after {MAX_PAGES} pages").into())
}

/// The failures an ECS describe call answered, as one error (`web: MISSING`).
fn failures(what: &str, f: Option<Vec<Failure>>) -> Result<()> {
    let f = f.unwrap_or_default();
    if f.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = f
        .iter()
        .map(|f| {
            let mut s = format!("{}: {}", short(f.arn.as_deref()), cell(f.reason.as_deref()));
            if let Some(d) = &f.detail {
                s.push_str(&format!(" ({d})"));
            }
            s
        })
        .collect();
    Err(anyhow!("{what} not found: {}", list.join(", ")).into())
}

/// Describes `names` `size` at a time (each describe call's limit): `call` answers a chunk's
/// items and failures; a failure ends it unless `tolerant`.
async fn describe_in_chunks<T, F, Fut>(
    names: &[String],
    size: usize,
    what: &str,
    tolerant: bool,
    mut call: F,
) -> Result<Vec<T>>
where
    F: FnMut(Vec<String>) -> Fut,
    Fut: Future<
        Output = std::result::Result<
            (Option<Vec<T>>, Option<Vec<Failure>>),
            berth_client::ClientError,
        >,
    >,
{
    let mut out = Vec::new();
    for chunk in names.chunks(size) {
        let (items, failed) = call(chunk.to_vec()).await?;
        if !tolerant {
            failures(what, failed)?;
        }
        out.extend(items.unwrap_or_default());
    }
    Ok(out)
}

// ---------------------------------------------------------------- clusters

#[derive(Subcommand, Debug)]
pub enum ClusterVerb {
    /// Every cluster, with its instances, services and tasks.
    Ls,
    /// One cluster, as the API describes it.
    Describe { name: String },
    /// Makes a cluster.
    Create { name: String },
    /// Deletes a cluster (it must have no instances and no active services).
    Rm { name: String },
}

pub async fn cluster(ctx: &Ctx, verb: ClusterVerb) -> Result<()> {
    match verb {
        ClusterVerb::Ls => {
            let arns = all_pages(|next_token| async {
                let r: ListClustersResponse = ctx
                    .ecs(
                        "ListClusters",
                        &ListClustersRequest {
                            next_token,
                            ..Default::default()
                        },
                    )
                    .await?;
                Ok((r.cluster_arns, r.next_token))
            })
            .await?;
            let clusters = describe_clusters(ctx, arns).await?;
            emit(ctx.output, &clusters, &cluster_table(&clusters))?;
        }
        ClusterVerb::Describe { name } => {
            let mut c = describe_clusters(ctx, vec![name.clone()]).await?;
            let c = c.pop().ok_or_else(|| anyhow!("cluster {name} not found"))?;
            emit_object(ctx.output, &c)?;
        }
        ClusterVerb::Create { name } => {
            let r: CreateClusterResponse = ctx
                .ecs(
                    "CreateCluster",
                    &CreateClusterRequest {
                        cluster_name: Some(name),
                        ..Default::default()
                    },
                )
                .await?;
            created(
                ctx.output,
                &r.cluster,
                r.cluster.as_ref().and_then(|c| c.cluster_arn.clone()),
            )?;
        }
        ClusterVerb::Rm { name } => {
            let r: DeleteClusterResponse = ctx
                .ecs(
                    "DeleteCluster",
                    &DeleteClusterRequest {
                        cluster: Some(name),
                    },
                )
                .await?;
            created(
                ctx.output,
                &r.cluster,
                r.cluster.as_ref().and_then(|c| c.cluster_arn.clone()),
            )?;
        }
    }
    Ok(())
}

/// Prints what a create or delete answered: its ARN for people, the object for scripts.
fn created<J: serde::Serialize>(output: Output, object: &J, arn: Option<String>) -> Result<()> {
    match output {
        Output::Json => emit_object(output, object)?,
        Output::Table | Output::Text => out!("{}", cell(arn)),
    }
    Ok(())
}

pub async fn describe_clusters(ctx: &Ctx, names: Vec<String>) -> Result<Vec<Cluster>> {
    describe_in_chunks(&names, 100, "cluster", false, |clusters| async {
        let r: DescribeClustersResponse = ctx
            .ecs(
                "DescribeClusters",
                &DescribeClustersRequest {
                    clusters: Some(clusters),
                    include: Some(vec!["STATISTICS".into(), "SETTINGS".into()]),
                },
            )
            .await?;
        Ok((r.clusters, r.failures))
    })
    .await
}

pub fn cluster_table(clusters: &[Cluster]) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "STATUS",
        "INSTANCES",
        "SERVICES",
        "RUNNING",
        "PENDING",
    ]);
    for c in clusters {
        t.row(vec![
            cell(c.cluster_name.as_deref()),
            cell(c.status.as_deref()),
            cell(c.registered_container_instances_count),
            cell(c.active_services_count),
            cell(c.running_tasks_count),
            cell(c.pending_tasks_count),
        ]);
    }
    t
}

// ---------------------------------------------------------------- services

#[derive(Subcommand, Debug)]
pub enum ServiceVerb {
    /// The cluster's services: desired, running and pending counts, and their rollout.
    Ls,
    /// One service, as the API describes it.
    Describe { name: String },
    /// A service's tasks: status, instance, address, ports, health and age.
    Ps {
        name: String,
        /// Stopped tasks too (ECS keeps them for an hour).
        #[arg(long, short = 'a')]
        all: bool,
    },
    /// Sets a service's desired count.
    Scale {
        name: String,
        count: i32,
        /// Wait until the service runs exactly COUNT tasks.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Rolls out a new image or task definition revision, and shows the rollout until the
    /// service is steady or the rollout failed.
    Deploy(deploy::DeployArgs),
    /// A service's events, newest last.
    Events {
        name: String,
        /// How many.
        #[arg(long, short = 'n', default_value_t = 20)]
        count: usize,
    },
    /// Makes a service of a task definition.
    Create {
        name: String,
        /// `family`, `family:revision` or an ARN.
        #[arg(long)]
        task_definition: String,
        #[arg(long, default_value_t = 1)]
        desired_count: i32,
        /// EC2, FARGATE or EXTERNAL (default: the cluster's capacity providers, else EC2).
        #[arg(long)]
        launch_type: Option<String>,
    },
    /// Deletes a service (with --force, even one still running tasks: they stop).
    Rm {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

pub async fn service(ctx: &Ctx, verb: ServiceVerb) -> Result<()> {
    match verb {
        ServiceVerb::Ls => {
            let services = list_services(ctx).await?;
            emit(
                ctx.output,
                &services,
                &service_table(&services, render::now()),
            )?;
        }
        ServiceVerb::Describe { name } => {
            let s = describe_service(ctx, &name).await?;
            emit_object(ctx.output, &s)?;
        }
        ServiceVerb::Ps { name, all } => {
            // ListTasks answers an unknown service with no tasks, and takes only a name;
            // people want to hear of a typo, and may give an ARN.
            let service = describe_service(ctx, &name).await?;
            let name = service.service_name.unwrap_or(name);
            show_tasks(ctx, Some(&name), None, all, false).await?;
        }
        ServiceVerb::Scale {
            name,
            count,
            wait,
            timeout,
        } => {
            let r: UpdateServiceResponse = ctx
                .ecs(
                    "UpdateService",
                    &UpdateServiceRequest {
                        cluster: Some(ctx.cluster.clone()),
                        service: Some(name.clone()),
                        desired_count: Some(count),
                        ..Default::default()
                    },
                )
                .await?;
            if ctx.output == Output::Json {
                emit_object(ctx.output, &r.service)?;
            } else {
                out!("{name}: desired count {count}");
            }
            if wait {
                wait_for_count(ctx, &name, count, Duration::from_secs(timeout)).await?;
            }
        }
        ServiceVerb::Deploy(args) => deploy::run(ctx, args).await?,
        ServiceVerb::Events { name, count } => {
            let s = describe_service(ctx, &name).await?;
            let mut events = s.events.unwrap_or_default();
            events.truncate(count);
            events.reverse();
            let mut t = Table::new(&["TIME", "MESSAGE"]);
            for e in &events {
                t.row(vec![timestamp(e.created_at), cell(e.message.as_deref())]);
            }
            emit(ctx.output, &events, &t)?;
        }
        ServiceVerb::Create {
            name,
            task_definition,
            desired_count,
            launch_type,
        } => {
            let r: CreateServiceResponse = ctx
                .ecs(
                    "CreateService",
                    &CreateServiceRequest {
                        cluster: Some(ctx.cluster.clone()),
                        service_name: Some(name),
                        task_definition: Some(task_definition),
                        desired_count: Some(desired_count),
                        launch_type,
                        ..Default::default()
                    },
                )
                .await?;
            created(
                ctx.output,
                &r.service,
                r.service.as_ref().and_then(|s| s.service_arn.clone()),
            )?;
        }
        ServiceVerb::Rm { name, force } => {
            let r: DeleteServiceResponse = ctx
                .ecs(
                    "DeleteService",
                    &DeleteServiceRequest {
                        cluster: Some(ctx.cluster.clone()),
                        service: Some(name),
                        force: Some(force),
                    },
                )
                .await?;
            created(
                ctx.output,
                &r.service,
                r.service.as_ref().and_then(|s| s.service_arn.clone()),
            )?;
        }
    }
    Ok(())
}

/// Every service of the cluster, described.
pub async fn list_services(ctx: &Ctx) -> Result<Vec<Service>> {
    let arns = all_pages(|next_token| async {
        let r: ListServicesResponse = ctx
            .ecs(
                "ListServices",
                &ListServicesRequest {
                    cluster: Some(ctx.cluster.clone()),
                    next_token,
                    ..Default::default()
                },
            )
            .await?;
        Ok((r.service_arns, r.next_token))
    })
    .await?;
    describe_services(ctx, arns).await
}

pub async fn describe_services(ctx: &Ctx, names: Vec<String>) -> Result<Vec<Service>> {
    describe_in_chunks(&names, 10, "service", false, |services| async {
        let r: DescribeServicesResponse = ctx
            .ecs(
                "DescribeServices",
                &DescribeServicesRequest {
                    cluster: Some(ctx.cluster.clone()),
                    services: Some(services),
                    ..Default::default()
                },
            )
            .await?;
        Ok((r.services, r.failures))
    })
    .await
}

/// One service, or an error naming it (ECS answers a missing service as a failure).
pub async fn describe_service(ctx: &Ctx, name: &str) -> Result<Service> {
    let mut s = describe_services(ctx, vec![name.to_string()]).await?;
    s.pop()
        .ok_or_else(|| anyhow!("service {name} not found in cluster {}", ctx.cluster).into())
}

/// Polls until `name` runs exactly `count` tasks and has none pending.
async fn wait_for_count(ctx: &Ctx, name: &str, count: i32, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let s = describe_service(ctx, name).await?;
        let (running, pending) = (s.running_count.unwrap_or(0), s.pending_count.unwrap_or(0));
        if running == count && pending == 0 {
            eprintln!("{name}: {running} running");
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(timed_out(format!(
                "{name}: {running} running, {pending} pending of {count} after {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub fn service_table(services: &[Service], now: f64) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "STATUS",
        "DESIRED",
        "RUNNING",
        "PENDING",
        "TASK DEFINITION",
        "LAUNCH",
        "ROLLOUT",
        "AGE",
    ]);
    for s in services {
        let primary = s
            .deployments
            .iter()
            .flatten()
            .find(|d| d.status.as_deref() == Some("PRIMARY"));
        let launch = s.launch_type.clone().or_else(|| {
            s.capacity_provider_strategy.as_ref().map(|st| {
                st.iter()
                    .filter_map(|i| i.capacity_provider.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
        });
        t.row(vec![
            cell(s.service_name.as_deref()),
            cell(s.status.as_deref()),
            cell(s.desired_count),
            cell(s.running_count),
            cell(s.pending_count),
            short(s.task_definition.as_deref()),
            cell(launch),
            cell(primary.and_then(|d| d.rollout_state.clone())),
            age(now, s.created_at),
        ]);
    }
    t
}

fn timestamp(t: Option<f64>) -> String {
    let Some(t) = t else {
        return "-".to_string();
    };
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|d| {
            d.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

// ---------------------------------------------------------------- tasks

#[derive(Subcommand, Debug)]
pub enum TaskVerb {
    /// The cluster's tasks.
    Ls {
        /// Only this service's.
        #[arg(long, conflicts_with = "family")]
        service: Option<String>,
        /// Only this task definition family's.
        #[arg(long)]
        family: Option<String>,
        /// Stopped tasks too.
        #[arg(long, short = 'a')]
        all: bool,
    },
    /// One task, as the API describes it.
    Describe { task: String },
    /// Runs a task: of an image alone (a task definition is registered for it) or of a task
    /// definition.
    Run(RunArgs),
    /// Stops a task.
    Stop {
        task: String,
        #[arg(long, default_value = "Stopped by berth task stop")]
        reason: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The image to run (a task definition is registered for it, family --name).
    #[arg(
        required_unless_present = "task_definition",
        conflicts_with = "task_definition"
    )]
    pub image: Option<String>,
    /// Run this task definition instead (`family`, `family:revision` or an ARN).
    #[arg(long)]
    pub task_definition: Option<String>,
    /// The family and container name for an image (default: the image's name).
    #[arg(long, conflicts_with = "task_definition")]
    pub name: Option<String>,
    /// How many tasks.
    #[arg(long, default_value_t = 1)]
    pub count: i32,
    /// The container's memory in MiB, for an image.
    #[arg(long, default_value_t = 128, conflicts_with = "task_definition")]
    pub memory: i32,
    /// The container's CPU units, for an image.
    #[arg(long, conflicts_with = "task_definition")]
    pub cpu: Option<i32>,
    /// A port to publish, `CONTAINER` or `HOST:CONTAINER`, for an image; may be repeated.
    #[arg(long = "publish", short = 'p', conflicts_with = "task_definition")]
    pub ports: Vec<String>,
    /// An environment variable, `NAME=VALUE`, for an image; may be repeated.
    #[arg(long = "env", short = 'e', conflicts_with = "task_definition")]
    pub env: Vec<String>,
    /// EC2, FARGATE or EXTERNAL.
    #[arg(long)]
    pub launch_type: Option<String>,
    /// Wait until the tasks run, and print their status (a task that stopped instead is an
    /// error, with its reason).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// The command, after `--`.
    #[arg(last = true, conflicts_with = "task_definition")]
    pub command: Vec<String>,
}

pub async fn task(ctx: &Ctx, verb: TaskVerb) -> Result<()> {
    match verb {
        TaskVerb::Ls {
            service,
            family,
            all,
        } => show_tasks(ctx, service.as_deref(), family.as_deref(), all, true).await?,
        TaskVerb::Describe { task } => {
            let mut t = describe_tasks(ctx, vec![task.clone()]).await?;
            let t = t.pop().ok_or_else(|| anyhow!("task {task} not found"))?;
            emit_object(ctx.output, &t)?;
        }
        TaskVerb::Run(args) => run_task(ctx, args).await?,
        TaskVerb::Stop { task, reason } => {
            let r: StopTaskResponse = ctx
                .ecs(
                    "StopTask",
                    &StopTaskRequest {
                        cluster: Some(ctx.cluster.clone()),
                        task: Some(task),
                        reason: Some(reason),
                    },
                )
                .await?;
            created(
                ctx.output,
                &r.task,
                r.task.as_ref().and_then(|t| t.task_arn.clone()),
            )?;
        }
    }
    Ok(())
}

/// Prints the tasks of `service` or `family` (or all) that should run, and with `all` those
/// stopped too; `with_group` adds each task's group.
async fn show_tasks(
    ctx: &Ctx,
    service: Option<&str>,
    family: Option<&str>,
    all: bool,
    with_group: bool,
) -> Result<()> {
    let mut arns = list_tasks(ctx, service, family, "RUNNING").await?;
    if all {
        // A task that stopped between the two listings is in both.
        for arn in list_tasks(ctx, service, family, "STOPPED").await? {
            if !arns.contains(&arn) {
                arns.push(arn);
            }
        }
    }
    let tasks = describe_tasks(ctx, arns).await?;
    print_tasks(ctx, &tasks, with_group).await
}

/// Prints tasks: a table naming each one's EC2 instance, or the API's objects.
async fn print_tasks(ctx: &Ctx, tasks: &[Task], with_group: bool) -> Result<()> {
    let instances = instance_ids(ctx, tasks).await?;
    emit(
        ctx.output,
        &tasks,
        &task_table(tasks, &instances, with_group, render::now()),
    )?;
    Ok(())
}

/// The cluster's tasks of `service` or `family` (or all) with desired status `status`.
pub async fn list_tasks(
    ctx: &Ctx,
    service: Option<&str>,
    family: Option<&str>,
    status: &str,
) -> Result<Vec<String>> {
    all_pages(|next_token| async move {
        let r: ListTasksResponse = ctx
            .ecs(
                "ListTasks",
                &ListTasksRequest {
                    cluster: Some(ctx.cluster.clone()),
                    service_name: service.map(str::to_string),
                    family: family.map(str::to_string),
                    desired_status: Some(status.into()),
                    next_token,
                    ..Default::default()
                },
            )
            .await?;
        Ok((r.task_arns, r.next_token))
    })
    .await
}

pub async fn describe_tasks(ctx: &Ctx, arns: Vec<String>) -> Result<Vec<Task>> {
    describe_in_chunks(&arns, 100, "task", false, |tasks| async {
        let r: DescribeTasksResponse = ctx
            .ecs(
                "DescribeTasks",
                &DescribeTasksRequest {
                    cluster: Some(ctx.cluster.clone()),
                    tasks: Some(tasks),
                    include: None,
                },
            )
            .await?;
        Ok((r.tasks, r.failures))
    })
    .await
}

/// The EC2 instance id of each container instance the tasks run on.
async fn instance_ids(ctx: &Ctx, tasks: &[Task]) -> Result<BTreeMap<String, String>> {
    let arns: std::collections::BTreeSet<String> = tasks
        .iter()
        .filter_map(|t| t.container_instance_arn.clone())
        .collect();
    // FARGATE tasks run on the managed pool, which the user's cluster does not list.
    let instances = describe_instances(ctx, arns.into_iter().collect(), true).await?;
    Ok(instances
        .into_iter()
        .filter_map(|i| Some((i.container_instance_arn?, i.ec2_instance_id?)))
        .collect())
}

/// A task's address: its interface's private IPv4 (awsvpc tasks); None for the others, whose
/// ports are the host's (see [`task_ports`]).
pub fn task_ip(t: &Task) -> Option<String> {
    let eni = t
        .attachments
        .iter()
        .flatten()
        .flat_map(|a| a.details.iter().flatten());
    for d in eni {
        if d.name.as_deref() == Some("privateIPv4Address") {
            return d.value.clone();
        }
    }
    None
}

/// A task's published ports, `HOST->CONTAINER/proto` (`IP:HOST->…` when bound to one
/// address), in container order; Docker's IPv4 and IPv6 bindings of one port are one.
pub fn task_ports(t: &Task) -> String {
    let mut ports: Vec<String> = Vec::new();
    for b in t
        .containers
        .iter()
        .flatten()
        .flat_map(|c| c.network_bindings.iter().flatten())
    {
        let address = match b.bind_ip.as_deref() {
            None | Some("0.0.0.0" | "::") => String::new(),
            Some(ip) => format!("{ip}:"),
        };
        let port = format!(
            "{address}{}->{}/{}",
            cell(b.host_port),
            cell(b.container_port),
            b.protocol.as_deref().unwrap_or("tcp")
        );
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    if ports.is_empty() {
        "-".into()
    } else {
        ports.join(",")
    }
}

/// `RUNNING`, or `PENDING → RUNNING` while a task moves toward its desired status.
fn task_status(t: &Task) -> String {
    match (t.last_status.as_deref(), t.desired_status.as_deref()) {
        (Some(l), Some(d)) if l != d => format!("{l} → {d}"),
        (l, _) => cell(l),
    }
}

pub fn task_table(
    tasks: &[Task],
    instances: &BTreeMap<String, String>,
    with_group: bool,
    now: f64,
) -> Table {
    let mut header = vec!["TASK", "TASK DEFINITION"];
    if with_group {
        header.push("GROUP");
    }
    header.extend(["STATUS", "INSTANCE", "IP", "PORTS", "HEALTH", "AGE"]);
    let mut t = Table::new(&header);
    for task in tasks {
        let mut row = vec![
            short(task.task_arn.as_deref()),
            short(task.task_definition_arn.as_deref()),
        ];
        if with_group {
            row.push(cell(task.group.as_deref()));
        }
        let instance = task
            .container_instance_arn
            .as_ref()
            .map(|a| instances.get(a).cloned().unwrap_or_else(|| short(Some(a))));
        row.extend([
            task_status(task),
            cell(instance),
            cell(task_ip(task)),
            task_ports(task),
            cell(task.health_status.as_deref()),
            age(now, task.started_at.or(task.created_at)),
        ]);
        t.row(row);
    }
    t
}

/// A task definition for an image alone: one essential container named after the family,
/// its ports, environment and command, logs to CloudWatch Logs group `/berth/FAMILY`.
pub fn image_task_definition(
    family: &str,
    args: &RunArgs,
    image: &str,
    region: &str,
) -> std::result::Result<RegisterTaskDefinitionRequest, String> {
    let mut ports = Vec::new();
    for p in &args.ports {
        let (host, container) = match p.split_once(':') {
            Some((h, c)) => (Some(h), c),
            None => (None, p.as_str()),
        };
        let num = |s: &str| {
            s.parse::<i32>()
                .ok()
                .filter(|n| (1..=65535).contains(n))
                .ok_or_else(|| {
                    format!("'{p}' is not a port mapping: PORT or HOST:PORT, 1 to 65535")
                })
        };
        ports.push(PortMapping {
            container_port: Some(num(container)?),
            host_port: host.map(num).transpose()?,
            protocol: Some("tcp".into()),
            ..Default::default()
        });
    }
    let mut env = Vec::new();
    for e in &args.env {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| format!("'{e}' is not an environment variable: NAME=VALUE"))?;
        env.push(KeyValuePair {
            name: Some(k.into()),
            value: Some(v.into()),
        });
    }
    let options: BTreeMap<String, String> = [
        ("awslogs-group", format!("/berth/{family}")),
        ("awslogs-region", region.to_string()),
        ("awslogs-stream-prefix", "berth".to_string()),
        ("awslogs-create-group", "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Ok(RegisterTaskDefinitionRequest {
        family: Some(family.to_string()),
        container_definitions: Some(vec![ContainerDefinition {
            name: Some(family.to_string()),
            image: Some(image.to_string()),
            essential: Some(true),
            memory: Some(args.memory),
            cpu: args.cpu,
            port_mappings: (!ports.is_empty()).then_some(ports),
            environment: (!env.is_empty()).then_some(env),
            command: (!args.command.is_empty()).then(|| args.command.clone()),
            log_configuration: Some(LogConfiguration {
                log_driver: Some("awslogs".into()),
                options: Some(options),
                secret_options: None,
            }),
            ..Default::default()
        }]),
        ..Default::default()
    })
}

/// The family name an image gives: its repository's last part, without tag or digest, in
/// the letters ECS allows.
pub fn family_of_image(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    let last = last.split(':').next().unwrap_or(last);
    let family: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(255)
        .collect();
    if family.is_empty() {
        "task".into()
    } else {
        family
    }
}

async fn run_task(ctx: &Ctx, args: RunArgs) -> Result<()> {
    let task_definition = match (&args.image, &args.task_definition) {
        (_, Some(td)) => td.clone(),
        (Some(image), None) => {
            let family = args.name.clone().unwrap_or_else(|| family_of_image(image));
            let req = image_task_definition(&family, &args, image, &ctx.client.settings().region)
                .map_err(|e| anyhow!(e))?;
            let r: RegisterTaskDefinitionResponse = ctx.ecs("RegisterTaskDefinition", &req).await?;
            r.task_definition
                .and_then(|t| t.task_definition_arn)
                .ok_or_else(|| anyhow!("RegisterTaskDefinition answered no ARN"))?
        }
        (None, None) => return Err(anyhow!("name an image or --task-definition").into()),
    };
    let r: RunTaskResponse = ctx
        .ecs(
            "RunTask",
            &RunTaskRequest {
                cluster: Some(ctx.cluster.clone()),
                task_definition: Some(task_definition),
                count: Some(args.count),
                launch_type: args.launch_type.clone(),
                started_by: Some("berth".into()),
                ..Default::default()
            },
        )
        .await?;
    let tasks = r.tasks.unwrap_or_default();
    let failed = r.failures.unwrap_or_default();
    if tasks.is_empty() {
        let why: Vec<String> = failed
            .iter()
            .map(|f| {
                format!(
                    "{} {}",
                    cell(f.reason.as_deref()),
                    f.detail.clone().unwrap_or_default()
                )
            })
            .collect();
        return Err(anyhow!("no task could be placed: {}", why.join("; ")).into());
    }
    if !failed.is_empty() {
        eprintln!(
            "{} of {} tasks could not be placed",
            failed.len(),
            args.count
        );
    }
    let arns: Vec<String> = tasks.iter().filter_map(|t| t.task_arn.clone()).collect();
    let tasks = if args.wait {
        wait_for_tasks(ctx, arns, Duration::from_secs(args.timeout)).await?
    } else {
        tasks
    };
    print_tasks(ctx, &tasks, false).await
}

/// Polls until every task is RUNNING or STOPPED.
async fn wait_for_tasks(ctx: &Ctx, arns: Vec<String>, timeout: Duration) -> Result<Vec<Task>> {
    let start = Instant::now();
    loop {
        let tasks = describe_tasks(ctx, arns.clone()).await?;
        let settled = tasks
            .iter()
            .all(|t| matches!(t.last_status.as_deref(), Some("RUNNING" | "STOPPED")));
        if settled {
            let stopped: Vec<String> = tasks
                .iter()
                .filter(|t| t.last_status.as_deref() == Some("STOPPED"))
                .map(|t| {
                    format!(
                        "{} stopped: {}",
                        short(t.task_arn.as_deref()),
                        cell(t.stopped_reason.as_deref())
                    )
                })
                .collect();
            if !stopped.is_empty() {
                return Err(anyhow!("{}", stopped.join("; ")).into());
            }
            return Ok(tasks);
        }
        if start.elapsed() > timeout {
            return Err(timed_out(format!(
                "the tasks were not running after {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------- instances

#[derive(Subcommand, Debug)]
pub enum InstanceVerb {
    /// The cluster's container instances and what they have left.
    Ls,
    /// One container instance (its id, EC2 instance id or ARN).
    Describe { instance: String },
    /// Drains an instance: its service tasks move elsewhere, nothing new is placed on it.
    Drain { instance: String },
    /// Makes a drained instance ACTIVE again.
    Activate { instance: String },
}

pub async fn instance(ctx: &Ctx, verb: InstanceVerb) -> Result<()> {
    match verb {
        InstanceVerb::Ls => {
            let instances = list_instances(ctx).await?;
            emit(
                ctx.output,
                &instances,
                &instance_table(&instances, render::now()),
            )?;
        }
        InstanceVerb::Describe { instance } => {
            let i = find_instance(ctx, &instance).await?;
            emit_object(ctx.output, &i)?;
        }
        InstanceVerb::Drain { instance } => set_state(ctx, &instance, "DRAINING").await?,
        InstanceVerb::Activate { instance } => set_state(ctx, &instance, "ACTIVE").await?,
    }
    Ok(())
}

async fn list_instances(ctx: &Ctx) -> Result<Vec<ContainerInstance>> {
    let arns = all_pages(|next_token| async {
        let r: ListContainerInstancesResponse = ctx
            .ecs(
                "ListContainerInstances",
                &ListContainerInstancesRequest {
                    cluster: Some(ctx.cluster.clone()),
                    next_token,
                    ..Default::default()
                },
            )
            .await?;
        Ok((r.container_instance_arns, r.next_token))
    })
    .await?;
    describe_instances(ctx, arns, false).await
}

/// Describes container instances of the cluster; with `tolerant`, those it does not hold
/// (the Fargate pool's, for example) are left out instead of failing.
async fn describe_instances(
    ctx: &Ctx,
    arns: Vec<String>,
    tolerant: bool,
) -> Result<Vec<ContainerInstance>> {
    describe_in_chunks(
        &arns,
        100,
        "container instance",
        tolerant,
        |instances| async {
            let r: DescribeContainerInstancesResponse = ctx
                .ecs(
                    "DescribeContainerInstances",
                    &DescribeContainerInstancesRequest {
                        cluster: Some(ctx.cluster.clone()),
                        container_instances: Some(instances),
                        include: None,
                    },
                )
                .await?;
            Ok((r.container_instances, r.failures))
        },
    )
    .await
}

/// An instance named by its container instance id or ARN, or its EC2 instance id.
async fn find_instance(ctx: &Ctx, name: &str) -> Result<ContainerInstance> {
    let instances = list_instances(ctx).await?;
    instances
        .into_iter()
        .find(|i| {
            i.ec2_instance_id.as_deref() == Some(name)
                || i.container_instance_arn.as_deref() == Some(name)
                || short(i.container_instance_arn.as_deref()) == name
        })
        .ok_or_else(|| {
            anyhow!(
                "no container instance {name} in cluster {} (`berth instance ls` lists them)",
                ctx.cluster
            )
            .into()
        })
}

async fn set_state(ctx: &Ctx, name: &str, status: &str) -> Result<()> {
    let i = find_instance(ctx, name).await?;
    let r: UpdateContainerInstancesStateResponse = ctx
        .ecs(
            "UpdateContainerInstancesState",
            &UpdateContainerInstancesStateRequest {
                cluster: Some(ctx.cluster.clone()),
                container_instances: Some(vec![i
                    .container_instance_arn
                    .clone()
                    .unwrap_or_default()]),
                status: Some(status.into()),
            },
        )
        .await?;
    failures("container instance", r.failures)?;
    match ctx.output {
        Output::Json => emit_object(ctx.output, &r.container_instances)?,
        _ => out!("{}: {status}", cell(i.ec2_instance_id)),
    }
    Ok(())
}

fn resource(list: &Option<Vec<Resource>>, name: &str) -> Option<i32> {
    list.iter()
        .flatten()
        .find(|r| r.name.as_deref() == Some(name))
        .and_then(|r| r.integer_value)
}

pub fn instance_table(instances: &[ContainerInstance], now: f64) -> Table {
    let mut t = Table::new(&[
        "ID",
        "INSTANCE",
        "STATUS",
        "AGENT",
        "RUNNING",
        "PENDING",
        "CPU FREE",
        "MEMORY FREE",
        "AGE",
    ]);
    let of = |i: &ContainerInstance, name: &str| match (
        resource(&i.remaining_resources, name),
        resource(&i.registered_resources, name),
    ) {
        (Some(free), Some(all)) => format!("{free}/{all}"),
        _ => "-".into(),
    };
    for i in instances {
        t.row(vec![
            short(i.container_instance_arn.as_deref()),
            cell(i.ec2_instance_id.as_deref()),
            cell(i.status.as_deref()),
            match i.agent_connected {
                Some(true) => "connected".into(),
                Some(false) => "disconnected".into(),
                None => "-".into(),
            },
            cell(i.running_tasks_count),
            cell(i.pending_tasks_count),
            of(i, "CPU"),
            of(i, "MEMORY"),
            age(now, i.registered_at),
        ]);
    }
    t
}

// ---------------------------------------------------------------- task definitions

#[derive(Subcommand, Debug)]
pub enum TaskdefVerb {
    /// Task definition families and their latest ACTIVE revision.
    Ls {
        /// Only families that start with this.
        #[arg(long)]
        family_prefix: Option<String>,
    },
    /// One task definition (`family`, `family:revision` or an ARN).
    Describe { task_definition: String },
    /// Deregisters a revision (`family:revision`).
    Rm { task_definition: String },
}

pub async fn taskdef(ctx: &Ctx, verb: TaskdefVerb) -> Result<()> {
    match verb {
        TaskdefVerb::Ls { family_prefix } => {
            let arns = all_pages(|next_token| {
                let family_prefix = family_prefix.clone();
                async move {
                    let r: ListTaskDefinitionsResponse = ctx
                        .ecs(
                            "ListTaskDefinitions",
                            &ListTaskDefinitionsRequest {
                                family_prefix,
                                status: Some("ACTIVE".into()),
                                next_token,
                                ..Default::default()
                            },
                        )
                        .await?;
                    Ok((r.task_definition_arns, r.next_token))
                }
            })
            .await?;
            let families = families(&arns);
            let mut t = Table::new(&["FAMILY", "LATEST", "REVISIONS"]);
            for (family, revs) in &families {
                t.row(vec![
                    family.clone(),
                    cell(revs.iter().max()),
                    revs.len().to_string(),
                ]);
            }
            emit(ctx.output, &arns, &t)?;
        }
        TaskdefVerb::Describe { task_definition } => {
            let r: DescribeTaskDefinitionResponse = ctx
                .ecs(
                    "DescribeTaskDefinition",
                    &DescribeTaskDefinitionRequest {
                        task_definition: Some(task_definition),
                        include: Some(vec!["TAGS".into()]),
                    },
                )
                .await?;
            emit_object(ctx.output, &r)?;
        }
        TaskdefVerb::Rm { task_definition } => {
            let r: DeregisterTaskDefinitionResponse = ctx
                .ecs(
                    "DeregisterTaskDefinition",
                    &DeregisterTaskDefinitionRequest {
                        task_definition: Some(task_definition),
                    },
                )
                .await?;
            let arn = r
                .task_definition
                .as_ref()
                .and_then(|t| t.task_definition_arn.clone());
            created(ctx.output, &r.task_definition, arn)?;
        }
    }
    Ok(())
}

/// Revisions by family, from task definition ARNs (`…:task-definition/FAMILY:REV`).
pub fn families(arns: &[String]) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for arn in arns {
        let name = short(Some(arn));
        if let Some((family, rev)) = name.rsplit_once(':') {
            if let Ok(rev) = rev.parse() {
                out.entry(family.to_string()).or_default().push(rev);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_row_shows_its_counts_and_its_primary_rollout() {
        let s = Service {
            service_name: Some("web".into()),
            status: Some("ACTIVE".into()),
            desired_count: Some(3),
            running_count: Some(2),
            pending_count: Some(1),
            task_definition: Some("arn:aws:ecs:us-east-1:0:task-definition/web:4".into()),
            launch_type: Some("EC2".into()),
            created_at: Some(1000.0),
            deployments: Some(vec![
                Deployment {
                    status: Some("ACTIVE".into()),
                    rollout_state: Some("COMPLETED".into()),
                    ..Default::default()
                },
                Deployment {
                    status: Some("PRIMARY".into()),
                    rollout_state: Some("IN_PROGRESS".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let t = service_table(&[s], 1300.0);
        assert_eq!(
            t.rows[0],
            [
                "web",
                "ACTIVE",
                "3",
                "2",
                "1",
                "web:4",
                "EC2",
                "IN_PROGRESS",
                "5m"
            ]
        );
    }

    #[test]
    fn a_task_row_names_its_instance_address_and_ports() {
        let task = Task {
            task_arn: Some("arn:aws:ecs:us-east-1:0:task/default/abc".into()),
            task_definition_arn: Some("arn:aws:ecs:us-east-1:0:task-definition/web:2".into()),
            last_status: Some("PENDING".into()),
            desired_status: Some("RUNNING".into()),
            container_instance_arn: Some("arn:ci/1".into()),
            attachments: Some(vec![Attachment {
                details: Some(vec![KeyValuePair {
                    name: Some("privateIPv4Address".into()),
                    value: Some("10.0.1.5".into()),
                }]),
                ..Default::default()
            }]),
            containers: Some(vec![Container {
                network_bindings: Some(
                    [
                        ("0.0.0.0", 32768, 80),
                        ("::", 32768, 80),
                        ("10.0.0.1", 53, 53),
                    ]
                    .into_iter()
                    .map(|(ip, host, container)| NetworkBinding {
                        bind_ip: Some(ip.into()),
                        host_port: Some(host),
                        container_port: Some(container),
                        protocol: Some("tcp".into()),
                        ..Default::default()
                    })
                    .collect(),
                ),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let instances = [("arn:ci/1".to_string(), "i-0abc".to_string())].into();
        let t = task_table(&[task], &instances, false, 0.0);
        assert_eq!(
            t.rows[0],
            [
                "abc",
                "web:2",
                "PENDING → RUNNING",
                "i-0abc",
                "10.0.1.5",
                "32768->80/tcp,10.0.0.1:53->53/tcp",
                "-",
                "-"
            ]
        );
    }

    #[test]
    fn an_image_alone_makes_a_task_definition_that_logs_to_its_own_group() {
        assert_eq!(family_of_image("127.0.0.1:7070/team/web:1.2"), "web");
        assert_eq!(family_of_image("busybox@sha256:abc"), "busybox");
        assert_eq!(family_of_image("my.app"), "my-app");
        let args = RunArgs {
            image: Some("busybox".into()),
            task_definition: None,
            name: None,
            count: 1,
            memory: 64,
            cpu: None,
            ports: vec!["8080:80".into(), "443".into()],
            env: vec!["A=b=c".into()],
            launch_type: None,
            wait: false,
            timeout: 1,
            command: vec!["sleep".into(), "5".into()],
        };
        let r = image_task_definition("busybox", &args, "busybox", "eu-west-1").expect("valid");
        let c = &r.container_definitions.as_ref().expect("containers")[0];
        let ports = c.port_mappings.as_ref().expect("ports");
        assert_eq!(
            (ports[0].host_port, ports[0].container_port),
            (Some(8080), Some(80))
        );
        assert_eq!(
            (ports[1].host_port, ports[1].container_port),
            (None, Some(443))
        );
        assert_eq!(
            c.environment.as_ref().expect("env")[0].value.as_deref(),
            Some("b=c")
        );
        let logs = c.log_configuration.as_ref().expect("logs");
        let opts = logs.options.as_ref().expect("options");
        assert_eq!(opts["awslogs-group"], "/berth/busybox");
        assert_eq!(opts["awslogs-region"], "eu-west-1");
        let bad = RunArgs {
            ports: vec!["99999".into()],
            ..args
        };
        let e = image_task_definition("busybox", &bad, "busybox", "r").expect_err("bad port");
        assert!(e.contains("'99999'"), "{e}");
    }

    #[test]
    fn families_group_revisions() {
        let arns = [
            "arn:aws:ecs:r:0:task-definition/web:1".to_string(),
            "arn:aws:ecs:r:0:task-definition/web:3".to_string(),
            "arn:aws:ecs:r:0:task-definition/db:1".to_string(),
        ];
        let f = families(&arns);
        assert_eq!(f["web"], vec![1, 3]);
        assert_eq!(f["db"], vec![1]);
    }
}
