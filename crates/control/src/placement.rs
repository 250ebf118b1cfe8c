//! ECS's placement rules from the wire into [`berth_scheduler::Rules`], checked as ECS checks
//! them, and the snapshot of a cluster's instances that placement and `--filter` read.

use crate::resources::Resources;
use crate::Control;
use berth_api::ecs::{self, ContainerInstance};
use berth_api::EcsError;
use berth_model::status::InstanceStatus;
use berth_scheduler::query::{self, Expr};
use berth_scheduler::{Candidate, Constraint, Resource, SpreadField, Strategy};
use std::collections::BTreeMap;

/// ECS allows ten constraints and five strategies per request.
const MAX_CONSTRAINTS: usize = 10;
const MAX_STRATEGIES: usize = 5;

/// A query-language expression, or InvalidParameterException saying where it is wrong.
pub fn expression(what: &str, s: &str) -> Result<Expr, EcsError> {
    query::parse(s).map_err(|e| EcsError::invalid(format!("{what} '{s}': {e}")))
}

pub fn constraints(
    request: &[ecs::PlacementConstraint],
    task_definition: &[ecs::TaskDefinitionPlacementConstraint],
) -> Result<Vec<Constraint>, EcsError> {
    if request.len() > MAX_CONSTRAINTS {
        return Err(EcsError::invalid(format!(
            "placementConstraints has {} entries; the limit is {MAX_CONSTRAINTS}",
            request.len()
        )));
    }
    let mut out = Vec::new();
    let pairs = request
        .iter()
        .map(|c| (c.r#type.as_deref(), c.expression.as_deref()))
        .chain(
            task_definition
                .iter()
                .map(|c| (c.r#type.as_deref(), c.expression.as_deref())),
        );
    for (kind, expr) in pairs {
        match (kind.unwrap_or(""), expr) {
            ("distinctInstance", None) => out.push(Constraint::DistinctInstance),
            ("distinctInstance", Some(_)) => {
                return Err(EcsError::invalid(
                    "a distinctInstance constraint takes no expression".to_string(),
                ))
            }
            ("memberOf", Some(e)) => {
                out.push(Constraint::MemberOf(expression("memberOf expression", e)?))
            }
            ("memberOf", None) => {
                return Err(EcsError::invalid(
                    "a memberOf constraint needs an expression".to_string(),
                ))
            }
            (other, _) => {
                return Err(EcsError::invalid(format!(
                    "placement constraint type '{other}' must be distinctInstance or memberOf"
                )))
            }
        }
    }
    Ok(out)
}

pub fn strategies(request: &[ecs::PlacementStrategy]) -> Result<Vec<Strategy>, EcsError> {
    if request.len() > MAX_STRATEGIES {
        return Err(EcsError::invalid(format!(
            "placementStrategy has {} entries; the limit is {MAX_STRATEGIES}",
            request.len()
        )));
    }
    request
        .iter()
        .map(|s| {
            let field = s.field.as_deref();
            match (s.r#type.as_deref().unwrap_or(""), field) {
                ("random", None) => Ok(Strategy::Random),
                ("binpack", Some(f)) if f.eq_ignore_ascii_case("memory") => {
                    Ok(Strategy::Binpack(Resource::Memory))
                }
                ("binpack", Some(f)) if f.eq_ignore_ascii_case("cpu") => {
                    Ok(Strategy::Binpack(Resource::Cpu))
                }
                ("spread", Some("instanceId" | "host")) => {
                    Ok(Strategy::Spread(SpreadField::Instance))
                }
                ("spread", Some(f)) if f.starts_with("attribute:") && f.len() > 10 => Ok(
                    Strategy::Spread(SpreadField::Attribute(f["attribute:".len()..].to_string())),
                ),
                ("random", Some(f)) => Err(EcsError::invalid(format!(
                    "the random placement strategy takes no field, got '{f}'"
                ))),
                ("binpack", f) => Err(EcsError::invalid(format!(
                    "binpack field {f:?} must be cpu or memory"
                ))),
                ("spread", f) => Err(EcsError::invalid(format!(
                    "spread field {f:?} must be instanceId, host or attribute:NAME"
                ))),
                (other, _) => Err(EcsError::invalid(format!(
                    "placement strategy type '{other}' must be random, spread or binpack"
                ))),
            }
        })
        .collect()
}

/// An instance as placement and the query language see it.
pub fn candidate(
    ci: &ContainerInstance,
    connected: bool,
    groups: BTreeMap<String, u32>,
) -> Result<Candidate, EcsError> {
    let rem = Resources::from_ecs(ci.remaining_resources.as_deref().unwrap_or_default())?;
    let running = groups.values().map(|n| u64::from(*n)).sum();
    Ok(Candidate {
        arn: ci.container_instance_arn.clone().unwrap_or_default(),
        ec2_instance_id: ci.ec2_instance_id.clone().unwrap_or_default(),
        agent_version: ci
            .version_info
            .as_ref()
            .and_then(|v| v.agent_version.clone()),
        registered_at: ci.registered_at.unwrap_or(0.0),
        groups,
        running_tasks_count: running,
        active: ci.status.as_deref() == Some(InstanceStatus::Active.as_str()),
        agent_connected: connected,
        cpu: rem.cpu,
        memory: rem.memory,
        ports_used: rem.ports,
        udp_ports_used: rem.ports_udp,
        attributes: ci
            .attributes
            .iter()
            .flatten()
            .filter_map(|a| Some((a.name.clone()?, a.value.clone())))
            .collect(),
    })
}

impl Control {}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(t: &str, f: Option<&str>) -> ecs::PlacementStrategy {
        ecs::PlacementStrategy {
            r#type: Some(t.into()),
            field: f.map(str::to_string),
        }
    }

    #[test]
    fn strategies_are_checked_as_ecs_checks_them() {
        let ok = strategies(&[
            strategy("spread", Some("attribute:ecs.availability-zone")),
            strategy("binpack", Some("MEMORY")),
            strategy("spread", Some("host")),
            strategy("random", None),
        ])
        .unwrap();
        assert_eq!(ok.len(), 4);
        for (t, f, says) in [
            ("binpack", Some("disk"), "cpu or memory"),
            ("spread", None, "instanceId"),
            ("random", Some("cpu"), "no field"),
            ("pack", None, "random, spread or binpack"),
        ] {
            let e = strategies(&[strategy(t, f)]).unwrap_err();
            assert!(e.message.contains(says), "{t} {f:?}: {}", e.message);
        }
        let six = vec![strategy("random", None); 6];
        assert!(strategies(&six).unwrap_err().message.contains("limit is 5"));
    }

    #[test]
    fn constraints_need_the_right_expression() {
        let c = |t: &str, e: Option<&str>| ecs::PlacementConstraint {
            r#type: Some(t.into()),
            expression: e.map(str::to_string),
        };
        assert_eq!(
            constraints(
                &[
                    c("distinctInstance", None),
                    c("memberOf", Some("agentConnected == true"))
                ],
                &[]
            )
            .unwrap()
            .len(),
            2
        );
        let e = constraints(&[c("memberOf", Some("attribute:x =="))], &[]).unwrap_err();
        assert!(e.message.contains("at position 14"), "{}", e.message);
        assert!(constraints(&[c("memberOf", None)], &[]).is_err());
        assert!(constraints(&[c("distinctInstance", Some("x"))], &[]).is_err());
        assert!(constraints(&[c("spreadOut", None)], &[]).is_err());
    }
}
