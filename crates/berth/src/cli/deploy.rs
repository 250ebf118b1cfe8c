//! `berth service deploy`: a new image or revision, then the rollout as it happens, until the
//! service is steady (exit 0), the rollout failed (1) or the wait ran out (3).

use super::ecs::describe_service;
use super::render::{cell, emit_object, short, stderr_is_terminal, Output};
use super::{timed_out, Ctx, Failed};
use anyhow::anyhow;
use berth_api::ecs::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    pub name: String,
    /// The new image: the service's task definition is registered again with it.
    #[arg(long, conflicts_with = "task_definition")]
    pub image: Option<String>,
    /// The container whose image --image replaces (needed when there are several).
    #[arg(long, requires = "image")]
    pub container: Option<String>,
    /// The task definition to deploy (`family`, `family:revision` or an ARN).
    #[arg(long)]
    pub task_definition: Option<String>,
    /// Replace every task even when nothing changed (what a deploy without --image or
    /// --task-definition does).
    #[arg(long)]
    pub force: bool,
    /// Start the rollout and return.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to follow the rollout, in seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// The new deployment's tasks, and those of older deployments still running.
    Rolling {
        running: i32,
        pending: i32,
        desired: i32,
        old_running: i32,
        failed: i32,
    },
    /// Steady on the new deployment.
    Done,
    /// The rollout failed (the circuit breaker's reason) or another deployment replaced it.
    Failed(String),
}

/// The progress of deployment `id` in a service's snapshot.
pub fn progress(s: &Service, id: &str) -> Progress {
    let deployments = s.deployments.clone().unwrap_or_default();
    let Some(mine) = deployments.iter().find(|d| d.id.as_deref() == Some(id)) else {
        let primary = deployments
            .iter()
            .find(|d| d.status.as_deref() == Some("PRIMARY"));
        return Progress::Failed(format!(
            "deployment {id} is gone; the service's primary deployment is {} ({})",
            cell(primary.and_then(|d| d.id.as_deref())),
            short(primary.and_then(|d| d.task_definition.as_deref()))
        ));
    };
    match mine.rollout_state.as_deref() {
        Some("COMPLETED") => return Progress::Done,
        Some("FAILED") => {
            return Progress::Failed(
                mine.rollout_state_reason
                    .clone()
                    .unwrap_or_else(|| "the deployment failed".into()),
            )
        }
        _ => {}
    }
    Progress::Rolling {
        running: mine.running_count.unwrap_or(0),
        pending: mine.pending_count.unwrap_or(0),
        desired: mine.desired_count.unwrap_or(0),
        old_running: deployments
            .iter()
            .filter(|d| d.id.as_deref() != Some(id))
            .map(|d| d.running_count.unwrap_or(0))
            .sum(),
        failed: mine.failed_tasks.unwrap_or(0),
    }
}

/// The task definition `td` registered again with `image` in container `container` (or its
/// only container).
pub fn with_image(
    td: &TaskDefinition,
    tags: Option<Vec<Tag>>,
    image: &str,
    container: Option<&str>,
) -> Result<RegisterTaskDefinitionRequest, String> {
    let mut containers = td.container_definitions.clone().unwrap_or_default();
    let names: Vec<String> = containers.iter().filter_map(|c| c.name.clone()).collect();
    let target = match container {
        Some(c) => containers
            .iter_mut()
            .find(|d| d.name.as_deref() == Some(c))
            .ok_or_else(|| {
                format!(
                    "the task definition has no container '{c}' (it has {})",
                    names.join(", ")
                )
            })?,
        None if containers.len() == 1 => &mut containers[0],
        None => {
            return Err(format!(
                "the task definition has {} containers ({}): name one with --container",
                containers.len(),
                names.join(", ")
            ))
        }
    };
    target.image = Some(image.to_string());
    Ok(RegisterTaskDefinitionRequest {
        family: td.family.clone(),
        container_definitions: Some(containers),
        cpu: td.cpu.clone(),
        memory: td.memory.clone(),
        network_mode: td.network_mode.clone(),
        task_role_arn: td.task_role_arn.clone(),
        execution_role_arn: td.execution_role_arn.clone(),
        volumes: td.volumes.clone(),
        placement_constraints: td.placement_constraints.clone(),
        requires_compatibilities: td.requires_compatibilities.clone(),
        pid_mode: td.pid_mode.clone(),
        ipc_mode: td.ipc_mode.clone(),
        proxy_configuration: td.proxy_configuration.clone(),
        inference_accelerators: td.inference_accelerators.clone(),
        ephemeral_storage: td.ephemeral_storage.clone(),
        runtime_platform: td.runtime_platform.clone(),
        enable_fault_injection: td.enable_fault_injection,
        trusted_execution_configuration: td.trusted_execution_configuration.clone(),
        tags: tags.filter(|t| !t.is_empty()),
    })
}

pub async fn run(ctx: &Ctx, args: DeployArgs) -> Result<(), Failed> {
    let service = describe_service(ctx, &args.name).await?;
    let task_definition = match (&args.image, &args.task_definition) {
        (Some(image), _) => {
            let current: DescribeTaskDefinitionResponse = ctx
                .ecs(
                    "DescribeTaskDefinition",
                    &DescribeTaskDefinitionRequest {
                        task_definition: service.task_definition.clone(),
                        include: Some(vec!["TAGS".into()]),
                    },
                )
                .await?;
            let td = current
                .task_definition
                .ok_or_else(|| anyhow!("DescribeTaskDefinition answered no task definition"))?;
            let req = with_image(&td, current.tags, image, args.container.as_deref())
                .map_err(|e| anyhow!(e))?;
            let r: RegisterTaskDefinitionResponse = ctx.ecs("RegisterTaskDefinition", &req).await?;
            let arn = r
                .task_definition
                .and_then(|t| t.task_definition_arn)
                .ok_or_else(|| anyhow!("RegisterTaskDefinition answered no ARN"))?;
            eprintln!("registered {} with image {image}", short(Some(&arn)));
            Some(arn)
        }
        (None, td) => td.clone(),
    };
    let force = args.force || task_definition.is_none();
    let r: UpdateServiceResponse = ctx
        .ecs(
            "UpdateService",
            &UpdateServiceRequest {
                cluster: Some(ctx.cluster.clone()),
                service: Some(args.name.clone()),
                task_definition,
                force_new_deployment: Some(force),
                ..Default::default()
            },
        )
        .await?;
    let updated = r
        .service
        .ok_or_else(|| anyhow!("UpdateService answered no service"))?;
    let primary = updated
        .deployments
        .iter()
        .flatten()
        .find(|d| d.status.as_deref() == Some("PRIMARY"))
        .and_then(|d| d.id.clone())
        .ok_or_else(|| anyhow!("the service has no primary deployment"))?;
    eprintln!(
        "{}: deployment {primary} of {}",
        args.name,
        short(updated.task_definition.as_deref())
    );
    if args.no_wait {
        if ctx.output == Output::Json {
            emit_object(ctx.output, &updated)?;
        }
        return Ok(());
    }
    // Events already there are history; only new ones are shown.
    let seen: HashSet<String> = service
        .events
        .iter()
        .flatten()
        .filter_map(|e| e.id.clone())
        .collect();
    follow(
        ctx,
        &args.name,
        &primary,
        seen,
        Duration::from_secs(args.timeout),
    )
    .await
}

/// Follows deployment `id` until it is done, failed, or `timeout` passed: on stderr, a
/// progress bar on a terminal or a line per change elsewhere, and the service's new events as
/// they come; on stdout, the outcome (the service object with `--output json`).
async fn follow(
    ctx: &Ctx,
    name: &str,
    id: &str,
    mut seen: HashSet<String>,
    timeout: Duration,
) -> Result<(), Failed> {
    let bar = if stderr_is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg}",
            )
            .map_err(|e| anyhow!(e))?
            .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    let say = |line: String| match &bar {
        Some(b) => b.println(line),
        None => eprintln!("{line}"),
    };
    let start = Instant::now();
    let mut last = None;
    loop {
        let s = describe_service(ctx, name).await?;
        let mut events: Vec<&ServiceEvent> = s
            .events
            .iter()
            .flatten()
            .filter(|e| e.id.as_ref().is_some_and(|i| !seen.contains(i)))
            .collect();
        events.reverse();
        for e in events {
            seen.insert(e.id.clone().unwrap_or_default());
            say(format!("  {}", cell(e.message.as_deref())));
        }
        let p = progress(&s, id);
        match &p {
            Progress::Done => {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                match ctx.output {
                    Output::Json => emit_object(ctx.output, &s)?,
                    _ => out!(
                        "{name}: deployment {id} completed: {} tasks of {}",
                        cell(s.running_count),
                        short(s.task_definition.as_deref())
                    ),
                }
                return Ok(());
            }
            Progress::Failed(reason) => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                return Err(anyhow!("{name}: deployment {id} failed: {reason}").into());
            }
            Progress::Rolling {
                running,
                pending,
                desired,
                old_running,
                failed,
            } => {
                let msg = format!(
                    "{pending} pending, {old_running} old running{}",
                    if *failed > 0 {
                        format!(", {failed} failed")
                    } else {
                        String::new()
                    }
                );
                match &bar {
                    Some(b) => {
                        b.set_length((*desired).max(0) as u64);
                        b.set_position((*running).max(0) as u64);
                        b.set_message(msg);
                    }
                    None if last.as_ref() != Some(&p) => {
                        eprintln!("{name}: {running}/{desired} new running, {msg}");
                    }
                    None => {}
                }
            }
        }
        last = Some(p);
        if start.elapsed() > timeout {
            if let Some(b) = &bar {
                b.abandon();
            }
            return Err(timed_out(format!(
                "{name}: deployment {id} still in progress after {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(id: &str, status: &str, state: &str, running: i32) -> Deployment {
        Deployment {
            id: Some(id.into()),
            status: Some(status.into()),
            rollout_state: Some(state.into()),
            running_count: Some(running),
            desired_count: Some(3),
            task_definition: Some(format!("td/{id}:1")),
            ..Default::default()
        }
    }

    #[test]
    fn a_rollout_rolls_then_completes_or_fails() {
        let mut s = Service {
            deployments: Some(vec![
                deployment("new", "PRIMARY", "IN_PROGRESS", 1),
                deployment("old", "ACTIVE", "COMPLETED", 2),
            ]),
            ..Default::default()
        };
        assert_eq!(
            progress(&s, "new"),
            Progress::Rolling {
                running: 1,
                pending: 0,
                desired: 3,
                old_running: 2,
                failed: 0
            }
        );
        s.deployments = Some(vec![deployment("new", "PRIMARY", "COMPLETED", 3)]);
        assert_eq!(progress(&s, "new"), Progress::Done);
        let mut failed = deployment("new", "ACTIVE", "FAILED", 0);
        failed.rollout_state_reason =
            Some("ECS deployment circuit breaker: tasks failed to start.".into());
        s.deployments = Some(vec![
            deployment("back", "PRIMARY", "IN_PROGRESS", 0),
            failed,
        ]);
        assert_eq!(
            progress(&s, "new"),
            Progress::Failed("ECS deployment circuit breaker: tasks failed to start.".into())
        );
        s.deployments = Some(vec![deployment("other", "PRIMARY", "IN_PROGRESS", 0)]);
        match progress(&s, "new") {
            Progress::Failed(why) => assert!(why.contains("other"), "{why}"),
            p => panic!("a replaced deployment is a failure, not {p:?}"),
        }
    }

    #[test]
    fn a_new_image_replaces_only_the_named_container() {
        let td = TaskDefinition {
            family: Some("web".into()),
            cpu: Some("256".into()),
            container_definitions: Some(vec![
                ContainerDefinition {
                    name: Some("app".into()),
                    image: Some("app:1".into()),
                    ..Default::default()
                },
                ContainerDefinition {
                    name: Some("sidecar".into()),
                    image: Some("proxy:1".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let e = with_image(&td, None, "app:2", None).expect_err("two containers");
        assert!(
            e.contains("--container") && e.contains("app, sidecar"),
            "{e}"
        );
        let r = with_image(&td, None, "app:2", Some("app")).expect("named");
        let images: Vec<_> = r
            .container_definitions
            .iter()
            .flatten()
            .map(|c| c.image.clone().unwrap_or_default())
            .collect();
        assert_eq!(images, ["app:2", "proxy:1"]);
        assert_eq!(r.family.as_deref(), Some("web"));
        assert_eq!(
            r.cpu.as_deref(),
            Some("256"),
            "the rest of the definition is kept"
        );
        assert!(with_image(&td, None, "x", Some("nope")).is_err());
    }
}
