//! Load balancers (Elastic Load Balancing v2's API): what each listens on and the health of the
//! targets behind it, which is what a person asks when a service's tasks get no traffic.

use super::ecs::all_pages;
use super::render::{age, cell, emit, emit_object, now, Output, Table};
use super::{Ctx, Failed};
use anyhow::anyhow;
use berth_api::elbv2::*;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum LbVerb {
    /// Every load balancer: its DNS name, scheme, state.
    Ls,
    /// One load balancer (a name or an ARN), as the API describes it.
    Describe { lb: String },
    /// A load balancer's listeners and where each forwards.
    Listeners { lb: String },
    /// The health of every target behind a load balancer, or of one target group (with --tg,
    /// the argument is a target group's name or ARN).
    Targets {
        name: String,
        #[arg(long)]
        tg: bool,
    },
    /// Deletes a load balancer (its listeners go with it; target groups stay).
    Rm { lb: String },
}

pub async fn lb(ctx: &Ctx, verb: LbVerb) -> Result<(), Failed> {
    match verb {
        LbVerb::Ls => {
            let lbs = all_pages(|marker| async {
                let r: DescribeLoadBalancersOutput = ctx
                    .client
                    .elb(
                        "DescribeLoadBalancers",
                        &DescribeLoadBalancersInput {
                            marker,
                            ..Default::default()
                        },
                    )
                    .await?;
                Ok((r.load_balancers, r.next_marker))
            })
            .await?;
            let mut t = Table::new(&["NAME", "DNS NAME", "SCHEME", "STATE", "AGE"]);
            let now = now();
            for lb in &lbs {
                t.row(vec![
                    cell(lb.load_balancer_name.as_deref()),
                    cell(lb.dns_name.as_deref()),
                    cell(lb.scheme.as_deref()),
                    cell(lb.state.as_ref().and_then(|s| s.code.as_deref())),
                    age(now, lb.created_time),
                ]);
            }
            emit(ctx.output, &lbs, &t)?;
        }
        LbVerb::Describe { lb } => emit_object(ctx.output, &load_balancer(ctx, &lb).await?)?,
        LbVerb::Listeners { lb } => {
            let lb = load_balancer(ctx, &lb).await?;
            let listeners = all_pages(|marker| {
                let load_balancer_arn = lb.load_balancer_arn.clone();
                async move {
                    let r: DescribeListenersOutput = ctx
                        .client
                        .elb(
                            "DescribeListeners",
                            &DescribeListenersInput {
                                load_balancer_arn,
                                marker,
                                ..Default::default()
                            },
                        )
                        .await?;
                    Ok((r.listeners, r.next_marker))
                }
            })
            .await?;
            let groups = target_groups(ctx, lb.load_balancer_arn.clone(), None).await?;
            let mut t = Table::new(&["PORT", "PROTOCOL", "DEFAULT ACTION"]);
            for l in &listeners {
                t.row(vec![
                    l.port.map_or_else(|| "-".into(), |p| p.to_string()),
                    cell(l.protocol.as_deref()),
                    actions(l.default_actions.as_deref().unwrap_or_default(), &groups),
                ]);
            }
            emit(ctx.output, &listeners, &t)?;
        }
        LbVerb::Targets { name, tg } => {
            let groups = if tg {
                target_groups(ctx, None, Some(name.clone())).await?
            } else {
                let lb = load_balancer(ctx, &name).await?;
                target_groups(ctx, lb.load_balancer_arn, None).await?
            };
            let mut rows = Vec::new();
            for g in &groups {
                let r: DescribeTargetHealthOutput = ctx
                    .client
                    .elb(
                        "DescribeTargetHealth",
                        &DescribeTargetHealthInput {
                            target_group_arn: g.target_group_arn.clone(),
                            ..Default::default()
                        },
                    )
                    .await?;
                for d in r.target_health_descriptions.unwrap_or_default() {
                    rows.push((g.target_group_name.clone(), d));
                }
            }
            let mut t = Table::new(&["TARGET GROUP", "TARGET", "PORT", "STATE", "REASON"]);
            for (group, d) in &rows {
                let target = d.target.as_ref();
                let health = d.target_health.as_ref();
                t.row(vec![
                    cell(group.as_deref()),
                    cell(target.and_then(|t| t.id.as_deref())),
                    target
                        .and_then(|t| t.port)
                        .map_or_else(|| "-".into(), |p| p.to_string()),
                    cell(health.and_then(|h| h.state.as_deref())),
                    cell(health.and_then(|h| h.reason.as_deref())),
                ]);
            }
            let json: Vec<_> = rows.iter().map(|(_, d)| d).collect();
            emit(ctx.output, &json, &t)?;
        }
        LbVerb::Rm { lb } => {
            let found = load_balancer(ctx, &lb).await?;
            let _: DeleteLoadBalancerOutput = ctx
                .client
                .elb(
                    "DeleteLoadBalancer",
                    &DeleteLoadBalancerInput {
                        load_balancer_arn: found.load_balancer_arn.clone(),
                    },
                )
                .await?;
            match ctx.output {
                Output::Json => emit_object(ctx.output, &found)?,
                _ => out!("deleted {}", cell(found.load_balancer_name.as_deref())),
            }
        }
    }
    Ok(())
}

/// The load balancer named `name` (or with ARN `name`): the service's own error when there is
/// none.
async fn load_balancer(ctx: &Ctx, name: &str) -> Result<LoadBalancer, Failed> {
    let input = if name.starts_with("arn:") {
        DescribeLoadBalancersInput {
            load_balancer_arns: Some(vec![name.to_string()]),
            ..Default::default()
        }
    } else {
        DescribeLoadBalancersInput {
            names: Some(vec![name.to_string()]),
            ..Default::default()
        }
    };
    let r: DescribeLoadBalancersOutput = ctx.client.elb("DescribeLoadBalancers", &input).await?;
    r.load_balancers
        .unwrap_or_default()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no load balancer {name}").into())
}

/// The target groups of a load balancer, or the one named (or with ARN) `name`.
async fn target_groups(
    ctx: &Ctx,
    load_balancer_arn: Option<String>,
    name: Option<String>,
) -> Result<Vec<TargetGroup>, Failed> {
    let (names, target_group_arns) = match name {
        Some(n) if n.starts_with("arn:") => (None, Some(vec![n])),
        Some(n) => (Some(vec![n]), None),
        None => (None, None),
    };
    all_pages(|marker| {
        let input = DescribeTargetGroupsInput {
            load_balancer_arn: load_balancer_arn.clone(),
            names: names.clone(),
            target_group_arns: target_group_arns.clone(),
            marker,
            ..Default::default()
        };
        async move {
            let r: DescribeTargetGroupsOutput =
                ctx.client.elb("DescribeTargetGroups", &input).await?;
            Ok((r.target_groups, r.next_marker))
        }
    })
    .await
}

/// A listener's actions for people: `forward web-tg`, `fixed-response 404`,
/// `redirect https:443`.
fn actions(actions: &[Action], groups: &[TargetGroup]) -> String {
    let group_name = |arn: &str| {
        groups
            .iter()
            .find(|g| g.target_group_arn.as_deref() == Some(arn))
            .and_then(|g| g.target_group_name.clone())
            .unwrap_or_else(|| arn.to_string())
    };
    let mut parts = Vec::new();
    for a in actions {
        let kind = a.r#type.as_deref().unwrap_or("-");
        let detail = match kind {
            "forward" => a
                .forwarded_groups()
                .iter()
                .map(|a| group_name(a))
                .collect::<Vec<_>>()
                .join(","),
            "fixed-response" => cell(
                a.fixed_response_config
                    .as_ref()
                    .and_then(|f| f.status_code.as_deref()),
            ),
            "redirect" => {
                let r = a.redirect_config.as_ref();
                format!(
                    "{}:{}",
                    cell(r.and_then(|r| r.protocol.as_deref())),
                    cell(r.and_then(|r| r.port.as_deref()))
                )
            }
            _ => String::new(),
        };
        parts.push(format!("{kind} {detail}").trim_end().to_string());
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> TargetGroup {
        TargetGroup {
            target_group_name: Some(name.into()),
            target_group_arn: Some(format!("arn:tg/{name}")),
            ..Default::default()
        }
    }

    #[test]
    fn actions_name_their_target_groups() {
        let groups = [group("web"), group("api")];
        let forward = Action {
            r#type: Some("forward".into()),
            target_group_arn: Some("arn:tg/web".into()),
            ..Default::default()
        };
        assert_eq!(
            actions(std::slice::from_ref(&forward), &groups),
            "forward web"
        );
        let weighted = Action {
            r#type: Some("forward".into()),
            forward_config: Some(ForwardActionConfig {
                target_groups: Some(vec![
                    TargetGroupTuple {
                        target_group_arn: Some("arn:tg/web".into()),
                        ..Default::default()
                    },
                    TargetGroupTuple {
                        target_group_arn: Some("arn:tg/gone".into()),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(actions(&[weighted], &groups), "forward web,arn:tg/gone");
        let fixed = Action {
            r#type: Some("fixed-response".into()),
            fixed_response_config: Some(FixedResponseActionConfig {
                status_code: Some("404".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            actions(&[forward, fixed], &groups),
            "forward web; fixed-response 404"
        );
        assert_eq!(actions(&[], &groups), "-");
    }
}
