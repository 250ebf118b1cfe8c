//! `berth plan`: where a workload would go on a cluster, and what would not fit, without
//! placing anything. The cluster is either Berth's simple description or the output of
//! `aws ecs describe-container-instances` (a live cluster's snapshot); the workload lists task
//! shapes with ECS's placement constraints and strategies. The same engine as RunTask decides.

use anyhow::{bail, Context, Result};
use berth_api::ecs;
use berth_scheduler::index::ClusterIndex;
use berth_scheduler::{Candidate, Demand, Rules};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn read(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// Instances from `{"instances": [...]}` (Berth's form) or `{"containerInstances": [...]}`
/// (DescribeContainerInstances' answer).
pub fn cluster(v: &Value) -> Result<Vec<Candidate>> {
    if let Some(list) = v.get("containerInstances") {
        let list: Vec<ecs::ContainerInstance> = serde_json::from_value(list.clone())
            .context("containerInstances is not DescribeContainerInstances' shape")?;
        return list
            .iter()
            .map(|ci| {
                berth_control::placement::candidate(
                    ci,
                    ci.agent_connected.unwrap_or(true),
                    BTreeMap::new(),
                )
                .map_err(|e| anyhow::anyhow!("{}", e.message))
            })
            .collect();
    }
    let Some(list) = v.get("instances").and_then(Value::as_array) else {
        bail!("the cluster file needs \"instances\" (or DescribeContainerInstances' \"containerInstances\")");
    };
    list.iter()
        .enumerate()
        .map(|(n, i)| {
            let id = i
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("instance-{n}"));
            let num = |k: &str| -> Result<i64> {
                i.get(k)
                    .and_then(Value::as_i64)
                    .filter(|x| *x >= 0)
                    .with_context(|| {
                        format!("instance {id}: \"{k}\" must be a non-negative integer")
                    })
            };
            let mut attributes = BTreeMap::new();
            if let Some(a) = i.get("attributes").and_then(Value::as_object) {
                for (k, v) in a {
                    attributes.insert(k.clone(), v.as_str().map(str::to_string));
                }
            }
            let ports = i
                .get("ports")
                .and_then(Value::as_array)
                .map(|p| {
                    p.iter()
                        .filter_map(|x| x.as_u64())
                        .map(|x| x as u16)
                        .collect()
                })
                .unwrap_or_else(|| [22, 2375, 2376, 51678, 51679].into());
            let (cpu, memory) = (num("cpu")?, num("memory")?);
            Ok(Candidate {
                arn: id.clone(),
                ec2_instance_id: id,
                active: true,
                agent_connected: true,
                cpu,
                memory,
                ports_used: ports,
                attributes,
                ..Default::default()
            })
        })
        .collect()
}

/// Runs `berth plan` and prints the report.
pub fn run(cluster_path: &Path, workload_path: &Path) -> Result<()> {
    let instances = cluster(&read(cluster_path)?)?;
    let workload = read(workload_path)?;
    let Some(items) = workload.get("tasks").and_then(Value::as_array) else {
        bail!("the workload file needs \"tasks\": a list of {{name, count, cpu, memory, ...}}");
    };
    let n_instances = instances.len();
    let mut index = ClusterIndex::new(instances);
    println!("cluster: {n_instances} instances");
    let mut all_fit = true;
    for (n, item) in items.iter().enumerate() {
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("tasks[{n}]"));
        let int = |k: &str, default: i64| -> Result<i64> {
            match item.get(k) {
                None => Ok(default),
                Some(v) => v
                    .as_i64()
                    .filter(|x| *x >= 0)
                    .with_context(|| format!("{name}: \"{k}\" must be a non-negative integer")),
            }
        };
        let count = int("count", 1)? as usize;
        let demand = Demand {
            cpu: int("cpu", 0)?,
            memory: int("memory", 0)?,
            ports: item
                .get("ports")
                .and_then(Value::as_array)
                .map(|p| {
                    p.iter()
                        .filter_map(|x| x.as_u64())
                        .map(|x| x as u16)
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        };
        let constraints: Vec<ecs::PlacementConstraint> = serde_json::from_value(
            item.get("placementConstraints")
                .cloned()
                .unwrap_or(Value::Array(vec![])),
        )
        .with_context(|| format!("{name}: placementConstraints"))?;
        let strategies: Vec<ecs::PlacementStrategy> = serde_json::from_value(
            item.get("placementStrategy")
                .cloned()
                .unwrap_or(Value::Array(vec![])),
        )
        .with_context(|| format!("{name}: placementStrategy"))?;
        let rules = Rules {
            constraints: berth_control::placement::constraints(&constraints, &[])
                .map_err(|e| anyhow::anyhow!("{name}: {}", e.message))?,
            strategies: berth_control::placement::strategies(&strategies)
                .map_err(|e| anyhow::anyhow!("{name}: {}", e.message))?,
            group: item
                .get("group")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("family:{name}")),
            seed: 0,
        };
        let p = index.place(&demand, &rules, count);
        let mut per_instance: BTreeMap<usize, usize> = BTreeMap::new();
        for i in &p.placed {
            *per_instance.entry(*i).or_default() += 1;
        }
        let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
        for (i, k) in &per_instance {
            let zone = index.instances()[*i]
                .attributes
                .get("ecs.availability-zone")
                .cloned()
                .flatten()
                .unwrap_or_else(|| "-".into());
            *per_zone.entry(zone).or_default() += k;
        }
        println!(
            "{name}: {} of {count} placed on {} instances",
            p.placed.len(),
            per_instance.len()
        );
        if per_zone.len() > 1 || !per_zone.contains_key("-") {
            let zones: Vec<String> = per_zone.iter().map(|(z, k)| format!("{z}={k}")).collect();
            println!("  by zone: {}", zones.join(" "));
        }
        for (i, k) in per_instance.iter().take(20) {
            println!("  {} x{k}", index.instances()[*i].arn);
        }
        if per_instance.len() > 20 {
            println!("  ... and {} more instances", per_instance.len() - 20);
        }
        if p.placed.len() < count {
            all_fit = false;
            let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
            for (_, r) in &p.failures {
                *reasons.entry(r.ecs_reason()).or_default() += 1;
            }
            let why: Vec<String> = reasons.iter().map(|(r, k)| format!("{r} on {k}")).collect();
            println!(
                "  {} do not fit: {}",
                count - p.placed.len(),
                why.join(", ")
            );
        }
    }
    let (cpu, memory) = index
        .instances()
        .iter()
        .fold((0i64, 0i64), |(c, m), i| (c + i.cpu, m + i.memory));
    println!("left: {cpu} CPU units, {memory} MiB across the cluster");
    if !all_fit {
        println!("not everything fits");
    }
    Ok(())
}
