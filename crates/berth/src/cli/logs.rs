//! `berth logs`: the awslogs output of a task's or a service's containers, read through the
//! CloudWatch Logs API the agents ship to, merged by time, optionally followed.

use super::ecs::{all_pages, describe_tasks, list_tasks};
use super::render::{cell, short};
use super::{Ctx, Failed};
use anyhow::anyhow;
use berth_api::ecs::{
    DescribeTaskDefinitionRequest, DescribeTaskDefinitionResponse, Task, TaskDefinition,
};
use berth_api::logs::{FilterLogEventsRequest, FilterLogEventsResponse, FilteredLogEvent};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The task (its id or ARN).
    #[arg(required_unless_present = "service", conflicts_with = "service")]
    pub task: Option<String>,
    /// Every running task of this service instead.
    #[arg(long)]
    pub service: Option<String>,
    /// Only this container's.
    #[arg(long)]
    pub container: Option<String>,
    /// Only lines newer than this: `30s`, `10m`, `2h`, `1d`.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Duration>,
    /// Keep printing new lines as they arrive (Ctrl-C ends).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

fn parse_since(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as 30s, 10m, 2h or 1d"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => {
            return Err(format!(
                "'{s}' is not a duration such as 30s, 10m, 2h or 1d"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

/// Where one container's lines are: its log group and stream, and the label its lines get.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    pub group: String,
    pub stream: String,
    pub label: String,
}

/// The awslogs streams of a task's containers, named as the agent names them
/// ([`berth_api::logs::awslogs_stream`]).
pub fn sources(task: &Task, td: &TaskDefinition, container: Option<&str>) -> Vec<Source> {
    let task_id = short(task.task_arn.as_deref());
    let mut out = Vec::new();
    for def in td.container_definitions.iter().flatten() {
        let name = def.name.clone().unwrap_or_default();
        if container.is_some_and(|c| c != name) {
            continue;
        }
        let Some(lc) = &def.log_configuration else {
            continue;
        };
        if lc.log_driver.as_deref() != Some("awslogs") {
            continue;
        }
        let options = lc.options.clone().unwrap_or_default();
        let Some(group) = options.get("awslogs-group") else {
            continue;
        };
        let runtime_id = task
            .containers
            .iter()
            .flatten()
            .find(|c| c.name.as_deref() == Some(name.as_str()))
            .and_then(|c| c.runtime_id.as_deref());
        let stream = berth_api::logs::awslogs_stream(&options, &name, &task_id, runtime_id);
        if let Some(stream) = stream {
            out.push(Source {
                group: group.clone(),
                stream,
                label: format!("{name}/{}", task_id.chars().take(8).collect::<String>()),
            });
        }
    }
    out
}

/// How far back each poll of `--follow` asks again, so that a line shipped a little late (an
/// agent's batch, another task's stream) is still printed; ids seen in that window are not
/// printed twice.
const LOOKBACK_MS: i64 = 10_000;

pub async fn run(ctx: &Ctx, args: LogsArgs) -> Result<(), Failed> {
    let since_ms = args.since.map(|d| {
        let now = super::render::now() * 1000.0;
        (now - d.as_millis() as f64) as i64
    });
    let mut definitions: HashMap<String, TaskDefinition> = HashMap::new();
    // The newest timestamp printed, and the ids printed at most LOOKBACK_MS before it.
    let mut newest: Option<i64> = None;
    let mut printed: BTreeMap<i64, HashSet<String>> = BTreeMap::new();
    let mut srcs = Vec::new();
    let name = args
        .task
        .as_deref()
        .or(args.service.as_deref())
        .unwrap_or("it");
    // Bounded: a person ends a follow with Ctrl-C long before a day of polls.
    for round in 0..86_400u64 {
        // Tasks start, and a stream named by container id exists only once the container
        // does: the sources are read again every few seconds.
        if round % 5 == 0 {
            srcs = resolve(ctx, &args, &mut definitions).await?;
            if srcs.is_empty() && !args.follow {
                return Err(anyhow!(
                    "no container{} of {name} sends its logs to CloudWatch Logs (the awslogs log driver) or has a stream yet",
                    args.container.as_deref().map(|c| format!(" named {c}")).unwrap_or_default()
                )
                .into());
            }
        }
        let multi = srcs.len() > 1;
        let from = match newest {
            Some(t) => Some(t - LOOKBACK_MS),
            None => since_ms,
        };
        let mut events = fetch(ctx, &srcs, from).await?;
        events.sort_by(|a, b| (a.1.timestamp, &a.0).cmp(&(b.1.timestamp, &b.0)));
        for (label, e) in &events {
            let id = e.event_id.clone().unwrap_or_default();
            let ts = e.timestamp.unwrap_or(0);
            if !printed.entry(ts).or_default().insert(id) {
                continue;
            }
            newest = Some(newest.map_or(ts, |n| n.max(ts)));
            let line = cell(e.message.as_deref());
            if multi {
                out!("{label} | {line}");
            } else {
                out!("{line}");
            }
        }
        if let Some(n) = newest {
            printed = printed.split_off(&(n - LOOKBACK_MS));
        }
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// The sources of the task, or of the service's running tasks.
async fn resolve(
    ctx: &Ctx,
    args: &LogsArgs,
    definitions: &mut HashMap<String, TaskDefinition>,
) -> Result<Vec<Source>, Failed> {
    let arns = match (&args.task, &args.service) {
        (Some(t), _) => vec![t.clone()],
        (None, Some(service)) => list_tasks(ctx, Some(service), None, "RUNNING").await?,
        (None, None) => return Err(anyhow!("name a task or --service").into()),
    };
    let tasks = describe_tasks(ctx, arns).await?;
    let mut out = Vec::new();
    for task in &tasks {
        let Some(arn) = task.task_definition_arn.clone() else {
            continue;
        };
        if !definitions.contains_key(&arn) {
            let r: DescribeTaskDefinitionResponse = ctx
                .ecs(
                    "DescribeTaskDefinition",
                    &DescribeTaskDefinitionRequest {
                        task_definition: Some(arn.clone()),
                        include: None,
                    },
                )
                .await?;
            if let Some(td) = r.task_definition {
                definitions.insert(arn.clone(), td);
            }
        }
        if let Some(td) = definitions.get(&arn) {
            out.extend(sources(task, td, args.container.as_deref()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Every event of the sources from `from` (epoch ms) on, labelled by source.
async fn fetch(
    ctx: &Ctx,
    srcs: &[Source],
    from: Option<i64>,
) -> Result<Vec<(String, FilteredLogEvent)>, Failed> {
    let mut by_group: BTreeMap<&str, Vec<&Source>> = BTreeMap::new();
    for s in srcs {
        by_group.entry(&s.group).or_default().push(s);
    }
    let mut out = Vec::new();
    for (group, streams) in by_group {
        let label: HashMap<&str, &str> = streams
            .iter()
            .map(|s| (s.stream.as_str(), s.label.as_str()))
            .collect();
        for chunk in streams.chunks(100) {
            let names: Vec<String> = chunk.iter().map(|s| s.stream.clone()).collect();
            let result = all_pages(|next_token| {
                let names = names.clone();
                async move {
                    let r: FilterLogEventsResponse = ctx
                        .logs(
                            "FilterLogEvents",
                            &FilterLogEventsRequest {
                                log_group_name: Some(group.to_string()),
                                log_stream_names: Some(names),
                                start_time: from,
                                next_token,
                                ..Default::default()
                            },
                        )
                        .await?;
                    Ok((r.events, r.next_token))
                }
            })
            .await;
            let events = match result {
                Ok(e) => e,
                // A stream the agent has not written yet, or a group not made yet.
                Err(f) if is_not_found(&f) => continue,
                Err(f) => return Err(f),
            };
            for e in events {
                let l = e
                    .log_stream_name
                    .as_deref()
                    .and_then(|s| label.get(s))
                    .map(|l| l.to_string())
                    .unwrap_or_default();
                out.push((l, e));
            }
        }
    }
    Ok(out)
}

fn is_not_found(f: &Failed) -> bool {
    f.error
        .downcast_ref::<berth_client::ClientError>()
        .and_then(|e| e.code())
        == Some("ResourceNotFoundException")
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::ecs::{Container, ContainerDefinition, LogConfiguration};

    fn def(name: &str, options: &[(&str, &str)]) -> ContainerDefinition {
        ContainerDefinition {
            name: Some(name.into()),
            log_configuration: Some(LogConfiguration {
                log_driver: Some("awslogs".into()),
                options: Some(
                    options
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                secret_options: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn streams_are_found_where_the_agent_writes_them() {
        let task = Task {
            task_arn: Some("arn:aws:ecs:r:0:task/default/0123456789abcdef".into()),
            containers: Some(vec![Container {
                name: Some("bare".into()),
                runtime_id: Some("cid".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let td = TaskDefinition {
            container_definitions: Some(vec![
                def(
                    "app",
                    &[("awslogs-group", "/g"), ("awslogs-stream-prefix", "p")],
                ),
                def(
                    "fixed",
                    &[("awslogs-group", "/g"), ("awslogs-stream", "one")],
                ),
                def("bare", &[("awslogs-group", "/h")]),
                ContainerDefinition {
                    name: Some("quiet".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let s = sources(&task, &td, None);
        let streams: Vec<(&str, &str)> = s
            .iter()
            .map(|s| (s.group.as_str(), s.stream.as_str()))
            .collect();
        assert_eq!(
            streams,
            [
                ("/g", "p/app/0123456789abcdef"),
                ("/g", "one"),
                ("/h", "cid")
            ]
        );
        assert_eq!(s[0].label, "app/01234567");
        assert_eq!(sources(&task, &td, Some("fixed")).len(), 1);
    }

    #[test]
    fn durations_read_like_docker_logs_since() {
        assert_eq!(parse_since("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_since("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_since("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_since("45"), Ok(Duration::from_secs(45)));
        assert!(parse_since("10 minutes").is_err());
        assert!(parse_since("m").is_err());
    }
}
