//! `berth top`: CPU and memory in use per running task (or per service), from the Container
//! Insights figures the server publishes to CloudWatch; redrawn every few seconds on a
//! terminal, printed once otherwise.

use super::ecs::{describe_clusters, describe_tasks, list_services, list_tasks};
use super::render::{cell, emit, short, stdout_is_terminal, Output, Table};
use super::{Ctx, Failed};
use anyhow::anyhow;
use berth_api::cloudwatch::{
    Dimension, GetMetricDataInput, GetMetricDataOutput, Metric, MetricDataQuery, MetricStat,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// Seconds between redraws on a terminal.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
    /// Print once and exit, even on a terminal.
    #[arg(long)]
    pub once: bool,
}

/// The Container Insights figures are CloudWatch's, under this namespace.
const NAMESPACE: &str = "ECS/ContainerInsights";
const FIGURES: [&str; 4] = [
    "CpuUtilized",
    "CpuReserved",
    "MemoryUtilized",
    "MemoryReserved",
];
/// GetMetricData takes at most 500 queries a call.
const QUERIES_PER_CALL: usize = 500;

/// One row: what it is, and its latest figures (None: no sample in the last five minutes).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub name: String,
    pub group: String,
    pub cpu_utilized: Option<f64>,
    pub cpu_reserved: Option<f64>,
    pub memory_utilized: Option<f64>,
    pub memory_reserved: Option<f64>,
}

/// The rows as a table: used, reserved and the share, for CPU units and MiB.
pub fn table(rows: &[Usage], first: &'static str) -> Table {
    let mut t = Table::new(&[first, "GROUP", "CPU", "CPU %", "MEMORY", "MEMORY %"]);
    let share = |used: Option<f64>, of: Option<f64>| match (used, of) {
        (Some(u), Some(r)) if r > 0.0 => format!("{:.1}", u / r * 100.0),
        _ => "-".into(),
    };
    for r in rows {
        t.row(vec![
            r.name.clone(),
            r.group.clone(),
            cell(r.cpu_utilized.map(|v| format!("{v:.0}"))),
            share(r.cpu_utilized, r.cpu_reserved),
            cell(r.memory_utilized.map(|v| format!("{v:.1} MiB"))),
            share(r.memory_utilized, r.memory_reserved),
        ]);
    }
    t
}

pub async fn run(ctx: &Ctx, args: TopArgs) -> Result<(), Failed> {
    let watch = !args.once && ctx.output == Output::Table && stdout_is_terminal();
    // Bounded: a person ends it with Ctrl-C long before a day of redraws.
    for _ in 0..(86_400 / args.interval.max(1)) {
        let (rows, first) = sample(ctx).await?;
        if watch {
            // Home and clear, then the table: a terminal is what reads this.
            print!("\x1b[H\x1b[2J");
        }
        emit(ctx.output, &rows, &table(&rows, first))?;
        if !watch {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(args.interval.max(1))).await;
    }
    Ok(())
}

/// The latest figures: per task when the cluster's Container Insights are `enhanced`, per
/// service when `enabled`.
async fn sample(ctx: &Ctx) -> Result<(Vec<Usage>, &'static str), Failed> {
    let cluster = describe_clusters(ctx, vec![ctx.cluster.clone()])
        .await?
        .pop()
        .ok_or_else(|| anyhow!("cluster {} not found", ctx.cluster))?;
    let level = cluster
        .settings
        .iter()
        .flatten()
        .find(|s| s.name.as_deref() == Some("containerInsights"))
        .and_then(|s| s.value.clone())
        .unwrap_or_else(|| "disabled".into());
    // The figures are under the cluster's name, whichever way --cluster named it.
    let name = cluster.cluster_name.as_deref().unwrap_or(&ctx.cluster);
    let mut rows: Vec<(Usage, Vec<(&'static str, String)>)> = Vec::new();
    let first = match level.as_str() {
        "enhanced" => {
            let arns = list_tasks(ctx, None, None, "RUNNING").await?;
            for t in describe_tasks(ctx, arns).await? {
                let id = short(t.task_arn.as_deref());
                let family = short(t.task_definition_arn.as_deref())
                    .rsplit_once(':')
                    .map(|(f, _)| f.to_string())
                    .unwrap_or_default();
                rows.push((
                    usage(&id, t.group.as_deref().unwrap_or("-")),
                    vec![
                        ("ClusterName", name.to_string()),
                        ("TaskDefinitionFamily", family),
                        ("TaskId", id),
                    ],
                ));
            }
            "TASK"
        }
        "enabled" => {
            for s in list_services(ctx).await? {
                let service = s.service_name.clone().unwrap_or_default();
                rows.push((
                    usage(&service, &format!("{} running", cell(s.running_count))),
                    vec![("ClusterName", name.to_string()), ("ServiceName", service)],
                ));
            }
            "SERVICE (PER TASK)"
        }
        _ => {
            return Err(anyhow!(
                "Container Insights is off for cluster {name}, so there are no figures; turn it on with \
                 aws ecs update-cluster-settings --cluster {name} --settings name=containerInsights,value=enhanced"
            )
            .into())
        }
    };
    let queries: Vec<(usize, &'static str, MetricDataQuery)> = rows
        .iter()
        .enumerate()
        .flat_map(|(i, (_, dims))| {
            FIGURES
                .iter()
                .enumerate()
                .map(move |(f, figure)| (i, *figure, query(&format!("q{i}_{f}"), figure, dims)))
        })
        .collect();
    let now = super::render::now();
    for chunk in queries.chunks(QUERIES_PER_CALL) {
        let out: GetMetricDataOutput = ctx
            .cloudwatch(
                "GetMetricData",
                &GetMetricDataInput {
                    metric_data_queries: Some(chunk.iter().map(|(_, _, q)| q.clone()).collect()),
                    start_time: Some((now - 300.0).floor()),
                    end_time: Some(now.ceil() + 60.0),
                    ..Default::default()
                },
            )
            .await?;
        let latest: BTreeMap<String, f64> = out
            .metric_data_results
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| {
                let (timestamps, values) = (r.timestamps?, r.values?);
                let newest = timestamps
                    .iter()
                    .zip(values)
                    .max_by(|a, b| a.0.total_cmp(b.0))?;
                Some((r.id?, newest.1))
            })
            .collect();
        for (i, figure, q) in chunk {
            let v = q.id.as_ref().and_then(|id| latest.get(id)).copied();
            let u = &mut rows[*i].0;
            match *figure {
                "CpuUtilized" => u.cpu_utilized = v,
                "CpuReserved" => u.cpu_reserved = v,
                "MemoryUtilized" => u.memory_utilized = v,
                _ => u.memory_reserved = v,
            }
        }
    }
    Ok((rows.into_iter().map(|(u, _)| u).collect(), first))
}

fn usage(name: &str, group: &str) -> Usage {
    Usage {
        name: name.to_string(),
        group: group.to_string(),
        cpu_utilized: None,
        cpu_reserved: None,
        memory_utilized: None,
        memory_reserved: None,
    }
}

/// One figure's per-minute average under `dims`.
fn query(id: &str, figure: &str, dims: &[(&str, String)]) -> MetricDataQuery {
    MetricDataQuery {
        id: Some(id.to_string()),
        metric_stat: Some(MetricStat {
            metric: Some(Metric {
                namespace: Some(NAMESPACE.into()),
                metric_name: Some(figure.into()),
                dimensions: Some(
                    dims.iter()
                        .map(|(n, v)| Dimension {
                            name: Some(n.to_string()),
                            value: Some(v.clone()),
                        })
                        .collect(),
                ),
            }),
            period: Some(60),
            stat: Some("Average".into()),
            unit: None,
        }),
        return_data: Some(true),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_shown_against_what_was_reserved() {
        let rows = [
            Usage {
                cpu_utilized: Some(512.4),
                cpu_reserved: Some(1024.0),
                memory_utilized: Some(30.2),
                memory_reserved: Some(64.0),
                ..usage("abc", "service:web")
            },
            usage("def", "family:idle"),
        ];
        let t = table(&rows, "TASK");
        assert_eq!(
            t.rows[0],
            ["abc", "service:web", "512", "50.0", "30.2 MiB", "47.2"]
        );
        assert_eq!(t.rows[1], ["def", "family:idle", "-", "-", "-", "-"]);
    }
}
