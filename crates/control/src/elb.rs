//! Elastic Load Balancing v2: one `match` over [`ElbRequest`], records in the store (keys
//! `elb/…`), and after every write the whole configuration rebuilt from the records and handed
//! to the data plane ([`berth_elb::Proxy::apply`]), which listens, routes and checks health.
//!
//! ELB writes take one lock in this process and guard every record they read, so a target
//! group cannot be deleted while a listener starts using it, nor a listener created twice on
//! one port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use berth_api::elbv2::{self, ElbRequest};
use berth_api::{EcsError, ErrorKind};
use berth_store::{KeyValue, Txn};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{decode, encode, keys, now_epoch, store_error, Caller, Control};

/// A load balancer's record: the wire shape and its attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LbRecord {
    pub lb: elbv2::LoadBalancer,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// A target group's record: the wire shape (without `LoadBalancerArns`, derived from `users`),
/// its attributes, and the listeners whose rules forward to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TgRecord {
    pub tg: elbv2::TargetGroup,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub users: BTreeSet<String>,
}

/// A registered target; `deregistered_at` while it drains.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct TargetRecord {
    pub id: String,
    pub port: i32,
    #[serde(default)]
    pub availability_zone: Option<String>,
    pub registered_at: f64,
    #[serde(default)]
    pub deregistered_at: Option<f64>,
}

/// The most of each ELB's quotas Berth holds to.
const MAX_TAGS: usize = 50;
const MAX_RULES: usize = 100;
const MAX_TARGETS: usize = 1000;
const MAX_PAGE: i32 = 400;

fn err(kind: ErrorKind, message: impl Into<String>) -> EcsError {
    EcsError::new(kind, message)
}

fn validation(message: impl Into<String>) -> EcsError {
    err(ErrorKind::ValidationError, message)
}

fn invalid_config(message: impl Into<String>) -> EcsError {
    err(ErrorKind::InvalidConfigurationRequest, message)
}

fn out<T: Serialize>(value: T) -> Result<Value, EcsError> {
    serde_json::to_value(value).map_err(|e| EcsError::server(format!("encoding the answer: {e}")))
}

fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// `arn:aws:elasticloadbalancing:REGION:ACCOUNT:RESOURCE` split into its resource's parts.
fn resource_parts(arn: &str) -> Option<Vec<&str>> {
    let mut it = arn.splitn(6, ':');
    let (a, p, s) = (it.next()?, it.next()?, it.next()?);
    if a != "arn" || p.is_empty() || s != "elasticloadbalancing" {
        return None;
    }
    let _region = it.next()?;
    let _account = it.next()?;
    Some(it.next()?.split('/').collect())
}

/// `loadbalancer/(app|net)/NAME/ID` → (name, id).
fn lb_of(arn: &str) -> Option<(String, String)> {
    match resource_parts(arn)?.as_slice() {
        ["loadbalancer", "app" | "net", name, id] => Some((name.to_string(), id.to_string())),
        _ => None,
    }
}

/// `targetgroup/NAME/ID` → (name, id).
fn tg_of(arn: &str) -> Option<(String, String)> {
    match resource_parts(arn)?.as_slice() {
        ["targetgroup", name, id] => Some((name.to_string(), id.to_string())),
        _ => None,
    }
}

/// `listener/(app|net)/LB/LB_ID/ID` → (lb id, id).
fn listener_of(arn: &str) -> Option<(String, String)> {
    match resource_parts(arn)?.as_slice() {
        ["listener", "app" | "net", _, lb, id] => Some((lb.to_string(), id.to_string())),
        _ => None,
    }
}

/// `listener-rule/(app|net)/LB/LB_ID/LISTENER_ID/ID` → (listener id, id).
fn rule_of(arn: &str) -> Option<(String, String)> {
    match resource_parts(arn)?.as_slice() {
        ["listener-rule", "app" | "net", _, _, l, id] => Some((l.to_string(), id.to_string())),
        _ => None,
    }
}

/// The load balancer a listener ARN belongs to.
fn lb_arn_of_listener(listener_arn: &str) -> String {
    match listener_arn.rsplit_once('/') {
        Some((head, _)) => head.replacen(":listener/", ":loadbalancer/", 1),
        None => String::new(),
    }
}

/// ELB's names: 1 to 32 alphanumerics and hyphens, not starting or ending with a hyphen.
fn check_name(what: &str, name: &str) -> Result<(), EcsError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(validation(format!(
            "{what} name '{name}' cannot be longer than '32' characters, must contain only alphanumeric characters or hyphens, and must not begin or end with a hyphen"
        )));
    }
    if what == "Load balancer" && name.starts_with("internal-") {
        return Err(validation(format!(
            "Load balancer name '{name}' cannot begin with 'internal-'"
        )));
    }
    Ok(())
}

fn check_port(port: i32) -> Result<u16, EcsError> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| validation(format!("Port '{port}' must be between 1 and 65535")))
}

fn check_tags(tags: &[elbv2::Tag]) -> Result<(), EcsError> {
    let mut seen = BTreeSet::new();
    for t in tags {
        let k = t.key.as_deref().unwrap_or_default();
        if k.is_empty() || k.len() > 128 || t.value.as_deref().unwrap_or_default().len() > 256 {
            return Err(validation(format!(
                "Tag key '{k}' must be 1 to 128 characters and its value at most 256"
            )));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(validation(format!(
                "Tag key '{k}' cannot start with the reserved prefix 'aws:'"
            )));
        }
        if !seen.insert(k) {
            return Err(err(
                ErrorKind::DuplicateTagKeys,
                format!("Tag key '{k}' is duplicated"),
            ));
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(err(
            ErrorKind::TooManyElbTags,
            format!("A resource can have at most {MAX_TAGS} tags"),
        ));
    }
    Ok(())
}

/// What a listener's protocol is for the data plane; HTTPS and TLS need certificates Berth
/// does not hold yet, UDP a datagram proxy it does not have.
fn data_protocol(p: &str) -> Result<berth_elb::Protocol, EcsError> {
    match p {
        "HTTP" => Ok(berth_elb::Protocol::Http),
        "TCP" => Ok(berth_elb::Protocol::Tcp),
        "HTTPS" | "TLS" | "UDP" | "TCP_UDP" | "GENEVE" | "QUIC" | "TCP_QUIC" => Err(err(
            ErrorKind::UnsupportedProtocol,
            format!("Protocol '{p}' is not supported by Berth's load balancers yet (HTTP and TCP are)"),
        )),
        other => Err(validation(format!(
            "Protocol '{other}' must be one of [HTTP, HTTPS, TCP, TLS, UDP, TCP_UDP, GENEVE, QUIC, TCP_QUIC]"
        ))),
    }
}

/// The pairs of load-balancer type and listener protocol Berth serves.
fn check_listener_protocol(kind: &str, protocol: &str) -> Result<(), EcsError> {
    data_protocol(protocol)?;
    match (kind, protocol) {
        ("application", "HTTP") | ("network", "TCP") => Ok(()),
        _ => Err(err(
            ErrorKind::UnsupportedProtocol,
            format!("Protocol '{protocol}' is not supported by {kind} load balancers"),
        )),
    }
}

/// Refuses what only HTTPS and TLS listeners take: mutual TLS other than `off`, and
/// certificates, SSL or ALPN policies (`certificates`: any of those given).
fn refuse_tls(
    mutual: Option<&elbv2::MutualAuthenticationAttributes>,
    certificates: bool,
) -> Result<(), EcsError> {
    if mutual.is_some_and(|m| m.mode.as_deref().is_some_and(|mode| mode != "off")) {
        return Err(invalid_config(
            "Mutual TLS authentication is for HTTPS listeners, which Berth does not serve yet",
        ));
    }
    if certificates {
        return Err(invalid_config(
            "Certificates, SSL policies and ALPN policies are for HTTPS and TLS listeners, which Berth does not serve yet",
        ));
    }
    Ok(())
}

/// The target-group attributes Berth honours, with ELB's defaults.
fn tg_defaults(protocol: &str) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("deregistration_delay.timeout_seconds".into(), "300".into());
    a.insert("stickiness.enabled".into(), "false".into());
    if protocol == "TCP" {
        a.insert("stickiness.type".into(), "source_ip".into());
    } else {
        a.insert("stickiness.type".into(), "lb_cookie".into());
        a.insert(
            "stickiness.lb_cookie.duration_seconds".into(),
            "86400".into(),
        );
        a.insert("slow_start.duration_seconds".into(), "0".into());
        a.insert("load_balancing.algorithm.type".into(), "round_robin".into());
    }
    a
}

fn check_tg_attribute(protocol: &str, key: &str, value: &str) -> Result<(), EcsError> {
    let int = |lo: i64, hi: i64| -> Result<(), EcsError> {
        match value.parse::<i64>() {
            Ok(v) if (lo..=hi).contains(&v) => Ok(()),
            _ => Err(validation(format!(
                "The value of attribute '{key}' must be an integer from {lo} to {hi}"
            ))),
        }
    };
    let bool_ = || -> Result<(), EcsError> {
        match value {
            "true" | "false" => Ok(()),
            _ => Err(validation(format!(
                "The value of attribute '{key}' must be 'true' or 'false'"
            ))),
        }
    };
    if !tg_defaults(protocol).contains_key(key) {
        return Err(validation(format!(
            "Target group attribute key '{key}' is not recognized (Berth honours: {})",
            tg_defaults(protocol)
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    match key {
        "deregistration_delay.timeout_seconds" => int(0, 3600),
        "stickiness.enabled" if protocol == "TCP" && value == "true" => Err(validation(
            "Source-IP stickiness of TCP target groups is not supported by Berth yet",
        )),
        "stickiness.enabled" => bool_(),
        "stickiness.type" => match (protocol, value) {
            ("TCP", "source_ip") | ("HTTP", "lb_cookie") => Ok(()),
            _ => Err(validation(format!(
                "Stickiness type '{value}' is not supported for target groups with the {protocol} protocol"
            ))),
        },
        "stickiness.lb_cookie.duration_seconds" => int(1, 604_800),
        "slow_start.duration_seconds" => match value.parse::<i64>() {
            Ok(0) => Ok(()),
            Ok(v) if (30..=900).contains(&v) => Ok(()),
            _ => Err(validation(
                "The value of attribute 'slow_start.duration_seconds' must be 0 or from 30 to 900",
            )),
        },
        "load_balancing.algorithm.type" => match value {
            "round_robin" | "least_outstanding_requests" => Ok(()),
            _ => Err(validation(format!(
                "Load balancing algorithm '{value}' must be 'round_robin' or 'least_outstanding_requests'"
            ))),
        },
        _ => Ok(()),
    }
}

/// The load-balancer attributes Berth honours, with ELB's defaults.
fn lb_defaults(kind: &str) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("deletion_protection.enabled".into(), "false".into());
    if kind == "application" {
        a.insert("idle_timeout.timeout_seconds".into(), "60".into());
    }
    a
}

fn check_lb_attribute(kind: &str, key: &str, value: &str) -> Result<(), EcsError> {
    if !lb_defaults(kind).contains_key(key) {
        return Err(validation(format!(
            "Load balancer attribute key '{key}' is not recognized (Berth honours: {})",
            lb_defaults(kind)
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let ok = match key {
        "deletion_protection.enabled" => matches!(value, "true" | "false"),
        "idle_timeout.timeout_seconds" => {
            value.parse::<u32>().is_ok_and(|v| (1..=4000).contains(&v))
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(validation(format!(
            "The value '{value}' of load balancer attribute '{key}' is not valid"
        )))
    }
}

/// A target group's health check from the request, over ELB's defaults for its protocol.
#[derive(Debug, Default)]
struct HealthInput {
    enabled: Option<bool>,
    interval: Option<i32>,
    path: Option<String>,
    port: Option<String>,
    protocol: Option<String>,
    timeout: Option<i32>,
    healthy: Option<i32>,
    unhealthy: Option<i32>,
    matcher: Option<elbv2::Matcher>,
}

fn apply_health(tg: &mut elbv2::TargetGroup, h: HealthInput) -> Result<(), EcsError> {
    let protocol = tg.protocol.clone().unwrap_or_else(|| "HTTP".into());
    if h.enabled == Some(false) {
        return Err(validation(
            "Health checks cannot be disabled for target groups with target type 'instance' or 'ip'",
        ));
    }
    if let Some(p) = h.protocol {
        match (protocol.as_str(), p.as_str()) {
            ("HTTP", "HTTP") | ("TCP", "TCP" | "HTTP") => {}
            (_, "HTTPS") => {
                return Err(err(
                    ErrorKind::UnsupportedProtocol,
                    "Health check protocol 'HTTPS' is not supported by Berth yet",
                ))
            }
            _ => {
                return Err(validation(format!(
                    "Health check protocol '{p}' is not supported for target groups with the {protocol} protocol"
                )))
            }
        }
        tg.health_check_protocol = Some(p);
    }
    if let Some(p) = h.port {
        if p != "traffic-port" && p.parse::<u16>().map_or(true, |n| n == 0) {
            return Err(validation(format!(
                "Health check port '{p}' must be 'traffic-port' or a port from 1 to 65535"
            )));
        }
        tg.health_check_port = Some(p);
    }
    if let Some(p) = h.path {
        if !p.starts_with('/') || p.len() > 1024 {
            return Err(validation(format!(
                "Health check path '{p}' must begin with a '/' and be at most 1024 characters"
            )));
        }
        tg.health_check_path = Some(p);
    }
    let range = |what: &str, v: Option<i32>, lo: i32, hi: i32| -> Result<Option<i32>, EcsError> {
        match v {
            Some(n) if !(lo..=hi).contains(&n) => Err(validation(format!(
                "{what} must be from {lo} to {hi}, not {n}"
            ))),
            other => Ok(other),
        }
    };
    if let Some(v) = range("Health check interval", h.interval, 5, 300)? {
        tg.health_check_interval_seconds = Some(v);
    }
    if let Some(v) = range("Health check timeout", h.timeout, 2, 120)? {
        tg.health_check_timeout_seconds = Some(v);
    }
    if let Some(v) = range("Healthy threshold count", h.healthy, 2, 10)? {
        tg.healthy_threshold_count = Some(v);
    }
    if let Some(v) = range("Unhealthy threshold count", h.unhealthy, 2, 10)? {
        tg.unhealthy_threshold_count = Some(v);
    }
    if let Some(m) = h.matcher {
        if m.grpc_code.is_some() {
            return Err(validation("gRPC matchers are not supported by Berth yet"));
        }
        let code = m.http_code.clone().unwrap_or_default();
        berth_elb::health::Matcher::parse(&code).map_err(validation)?;
        tg.matcher = Some(m);
    }
    if tg.health_check_timeout_seconds >= tg.health_check_interval_seconds {
        return Err(validation(
            "Health check timeout must be smaller than the interval",
        ));
    }
    Ok(())
}

fn new_target_group(arn: String, r: &elbv2::CreateTargetGroupInput) -> Result<TgRecord, EcsError> {
    let name = r.name.clone().unwrap_or_default();
    let target_type = r.target_type.clone().unwrap_or_else(|| "instance".into());
    match target_type.as_str() {
        "instance" | "ip" => {}
        "lambda" | "alb" => {
            return Err(invalid_config(format!(
                "Target type '{target_type}' is not supported by Berth yet (instance and ip are)"
            )))
        }
        other => {
            return Err(validation(format!(
                "Target type '{other}' must be one of [instance, ip, lambda, alb]"
            )))
        }
    }
    let protocol = r
        .protocol
        .clone()
        .ok_or_else(|| validation("A protocol must be specified"))?;
    data_protocol(&protocol)?;
    let port = r
        .port
        .ok_or_else(|| validation("A port must be specified"))?;
    check_port(port)?;
    if r.protocol_version.as_deref().is_some_and(|v| v != "HTTP1") {
        return Err(invalid_config(format!(
            "Protocol version '{}' is not supported by Berth yet (HTTP1 is)",
            r.protocol_version.as_deref().unwrap_or_default()
        )));
    }
    if r.ip_address_type.as_deref().is_some_and(|v| v != "ipv4") {
        return Err(invalid_config(
            "Only the 'ipv4' IP address type is supported by Berth",
        ));
    }
    if r.target_control_port.is_some() {
        return Err(invalid_config(
            "TargetControlPort is not supported by Berth's target groups",
        ));
    }
    let http = protocol == "HTTP";
    let mut tg = elbv2::TargetGroup {
        target_group_arn: Some(arn),
        target_group_name: Some(name),
        protocol: Some(protocol.clone()),
        port: Some(port),
        vpc_id: r.vpc_id.clone(),
        health_check_protocol: Some(if http { "HTTP" } else { "TCP" }.into()),
        health_check_port: Some("traffic-port".into()),
        health_check_enabled: Some(true),
        health_check_interval_seconds: Some(30),
        health_check_timeout_seconds: Some(if http { 5 } else { 10 }),
        healthy_threshold_count: Some(5),
        unhealthy_threshold_count: Some(2),
        health_check_path: http.then(|| "/".to_string()),
        matcher: http.then(|| elbv2::Matcher {
            http_code: Some("200".into()),
            grpc_code: None,
        }),
        target_type: Some(target_type),
        protocol_version: http.then(|| "HTTP1".to_string()),
        ip_address_type: Some("ipv4".into()),
        ..Default::default()
    };
    apply_health(
        &mut tg,
        HealthInput {
            enabled: r.health_check_enabled,
            interval: r.health_check_interval_seconds,
            path: r.health_check_path.clone(),
            port: r.health_check_port.clone(),
            protocol: r.health_check_protocol.clone(),
            timeout: r.health_check_timeout_seconds,
            healthy: r.healthy_threshold_count,
            unhealthy: r.unhealthy_threshold_count,
            matcher: r.matcher.clone(),
        },
    )?;
    // Path and matcher only mean something to HTTP checks.
    if tg.health_check_protocol.as_deref() == Some("HTTP") {
        tg.health_check_path.get_or_insert_with(|| "/".into());
        tg.matcher.get_or_insert_with(|| elbv2::Matcher {
            http_code: Some("200-399".into()),
            grpc_code: None,
        });
    }
    Ok(TgRecord {
        attributes: tg_defaults(&protocol),
        tg,
        users: BTreeSet::new(),
    })
}

/// The target groups actions forward to.
fn forwards(actions: &[elbv2::Action]) -> BTreeSet<String> {
    actions
        .iter()
        .flat_map(elbv2::Action::forwarded_groups)
        .collect()
}

/// The target groups a listener forwards to once its default actions are `defaults` and,
/// when `changed` names one of its other rules, that rule's actions are the given ones
/// (`None`: the rule is gone).
fn groups_after(
    snap: &Snapshot,
    listener_arn: &str,
    defaults: &[elbv2::Action],
    changed: Option<(&str, Option<&[elbv2::Action]>)>,
) -> BTreeSet<String> {
    let mut used = forwards(defaults);
    for (_, r) in snap.rules_of(listener_arn) {
        if r.is_default == Some(true) {
            continue;
        }
        let actions = match changed {
            Some((arn, actions)) if r.rule_arn.as_deref() == Some(arn) => actions,
            _ => r.actions.as_deref(),
        };
        used.extend(forwards(actions.unwrap_or_default()));
    }
    used
}

/// Checks a rule's (or a listener's default) actions: exactly one terminal action Berth
/// performs, of a kind the listener's protocol allows.
fn check_actions(actions: &[elbv2::Action], protocol: &str) -> Result<(), EcsError> {
    if actions.is_empty() {
        return Err(validation("At least one action must be specified"));
    }
    if actions.len() > 1 {
        return Err(err(
            ErrorKind::TooManyActions,
            "Berth's rules take one action (authenticate actions are not supported)",
        ));
    }
    let a = &actions[0];
    let kind = a.r#type.as_deref().unwrap_or_default();
    let tcp = protocol == "TCP";
    match kind {
        "forward" => {
            let tuples = a
                .forward_config
                .as_ref()
                .and_then(|f| f.target_groups.clone())
                .unwrap_or_default();
            if a.target_group_arn.is_none() && tuples.is_empty() {
                return Err(validation(
                    "A target group ARN must be specified for a forward action",
                ));
            }
            if tuples.len() > 5 {
                return Err(validation(
                    "A forward action can have at most 5 target groups",
                ));
            }
            if let (Some(arn), false) = (&a.target_group_arn, tuples.is_empty()) {
                if tuples.len() != 1 || tuples[0].target_group_arn.as_ref() != Some(arn) {
                    return Err(validation(
                        "TargetGroupArn and ForwardConfig must name the same single target group when both are given",
                    ));
                }
            }
            for t in &tuples {
                if t.weight.is_some_and(|w| !(0..=999).contains(&w)) {
                    return Err(validation("Target group weights must be from 0 to 999"));
                }
            }
            if a
                .forward_config
                .as_ref()
                .and_then(|f| f.target_group_stickiness_config.as_ref())
                .is_some_and(|s| s.enabled == Some(true))
            {
                return Err(err(
                    ErrorKind::InvalidLoadBalancerAction,
                    "Target-group stickiness of a forward action is not supported by Berth yet (a target group's own lb_cookie stickiness is)",
                ));
            }
            if tcp && tuples.len() > 1 {
                return Err(validation(
                    "A network load balancer's forward action takes one target group",
                ));
            }
            Ok(())
        }
        "fixed-response" | "redirect" if tcp => Err(err(
            ErrorKind::InvalidLoadBalancerAction,
            format!("Action type '{kind}' is not supported for listeners with the TCP protocol"),
        )),
        "fixed-response" => {
            let c = a.fixed_response_config.as_ref().ok_or_else(|| {
                validation("A fixed-response action needs a FixedResponseConfig")
            })?;
            let code = c.status_code.as_deref().unwrap_or_default();
            let ok = code.len() == 3
                && code.parse::<u16>().is_ok_and(|n| (200..=599).contains(&n))
                && !code.starts_with('3');
            if !ok {
                return Err(validation(format!(
                    "Fixed-response status code '{code}' must be 2XX, 4XX or 5XX"
                )));
            }
            if let Some(t) = c.content_type.as_deref() {
                const TYPES: [&str; 5] = [
                    "text/plain",
                    "text/css",
                    "text/html",
                    "application/javascript",
                    "application/json",
                ];
                if !TYPES.contains(&t) {
                    return Err(validation(format!(
                        "Fixed-response content type '{t}' must be one of [{}]",
                        TYPES.join(", ")
                    )));
                }
            }
            if c.message_body.as_deref().is_some_and(|b| b.len() > 1024) {
                return Err(validation(
                    "A fixed-response message body can be at most 1024 characters",
                ));
            }
            Ok(())
        }
        "redirect" => {
            let c = a
                .redirect_config
                .as_ref()
                .ok_or_else(|| validation("A redirect action needs a RedirectConfig"))?;
            match c.status_code.as_deref() {
                Some("HTTP_301" | "HTTP_302") => {}
                other => {
                    return Err(validation(format!(
                        "Redirect status code '{}' must be HTTP_301 or HTTP_302",
                        other.unwrap_or_default()
                    )))
                }
            }
            if c.protocol.as_deref().is_some_and(|p| {
                !matches!(p, "HTTP" | "HTTPS" | "#{protocol}")
            }) {
                return Err(validation(
                    "Redirect protocol must be HTTP, HTTPS or #{protocol}",
                ));
            }
            Ok(())
        }
        "authenticate-oidc" | "authenticate-cognito" | "jwt-validation" => Err(err(
            ErrorKind::InvalidLoadBalancerAction,
            format!("Action type '{kind}' is not supported by Berth yet"),
        )),
        other => Err(validation(format!(
            "Action type '{other}' must be one of [forward, redirect, fixed-response, authenticate-oidc, authenticate-cognito, jwt-validation]"
        ))),
    }
}

/// Fills in what ELB shows of an action: the forward's `ForwardConfig` with weights, `Order`.
fn normalize_actions(actions: &mut [elbv2::Action]) {
    for (i, a) in actions.iter_mut().enumerate() {
        a.order.get_or_insert(i as i32 + 1);
        if a.r#type.as_deref() == Some("forward") {
            let mut fc = a.forward_config.clone().unwrap_or_default();
            if fc.target_groups.as_ref().is_none_or(|t| t.is_empty()) {
                fc.target_groups = Some(vec![elbv2::TargetGroupTuple {
                    target_group_arn: a.target_group_arn.clone(),
                    weight: Some(1),
                }]);
            }
            for t in fc.target_groups.iter_mut().flatten() {
                t.weight.get_or_insert(1);
            }
            fc.target_group_stickiness_config
                .get_or_insert(elbv2::TargetGroupStickinessConfig {
                    enabled: Some(false),
                    duration_seconds: None,
                });
            if a.target_group_arn.is_none() {
                if let Some([one]) = fc.target_groups.as_deref() {
                    a.target_group_arn = one.target_group_arn.clone();
                }
            }
            a.forward_config = Some(fc);
        }
        if let Some(r) = &mut a.redirect_config {
            r.protocol.get_or_insert_with(|| "#{protocol}".into());
            r.host.get_or_insert_with(|| "#{host}".into());
            r.port.get_or_insert_with(|| "#{port}".into());
            r.path.get_or_insert_with(|| "/#{path}".into());
            r.query.get_or_insert_with(|| "#{query}".into());
        }
    }
}

/// ELB's rule conditions: field and values, within ELB's limit of 5 values in all.
fn check_conditions(conditions: &[elbv2::RuleCondition]) -> Result<(), EcsError> {
    let mut values = 0;
    for c in conditions {
        let field = c.field.as_deref().unwrap_or_default();
        let legacy = c.values.as_ref().is_some_and(|v| !v.is_empty());
        let config = c.host_header_config.is_some() || c.path_pattern_config.is_some();
        if legacy && config {
            return Err(validation(format!(
                "A '{field}' condition cannot give both Values and its configuration"
            )));
        }
        if field == "http-header"
            && c.http_header_config
                .as_ref()
                .and_then(|h| h.http_header_name.as_deref())
                .is_none_or(str::is_empty)
        {
            return Err(validation(
                "An 'http-header' condition needs an HttpHeaderName",
            ));
        }
        let n = condition_values(c)?.len();
        if n == 0 {
            return Err(validation(format!(
                "A '{field}' condition must have at least one value"
            )));
        }
        if c.regex_values.is_some()
            || c.host_header_config
                .as_ref()
                .is_some_and(|h| h.regex_values.is_some())
            || c.path_pattern_config
                .as_ref()
                .is_some_and(|h| h.regex_values.is_some())
            || c.http_header_config
                .as_ref()
                .is_some_and(|h| h.regex_values.is_some())
        {
            return Err(validation(
                "Regular-expression conditions are not supported by Berth yet",
            ));
        }
        values += n;
    }
    if values > 5 {
        return Err(validation(
            "A rule can have at most 5 condition values in all",
        ));
    }
    Ok(())
}

/// A condition as the data plane takes it (values from `Values` or the field's config).
fn condition_values(c: &elbv2::RuleCondition) -> Result<Vec<String>, EcsError> {
    let field = c.field.as_deref().unwrap_or_default();
    let legacy = c.values.clone().unwrap_or_default();
    let pick = |cfg: Option<Vec<String>>| {
        if legacy.is_empty() {
            cfg.unwrap_or_default()
        } else {
            legacy.clone()
        }
    };
    Ok(match field {
        "path-pattern" => pick(c.path_pattern_config.as_ref().and_then(|x| x.values.clone())),
        "host-header" => pick(c.host_header_config.as_ref().and_then(|x| x.values.clone())),
        "http-header" => c
            .http_header_config
            .as_ref()
            .and_then(|x| x.values.clone())
            .unwrap_or_default(),
        "http-request-method" => c
            .http_request_method_config
            .as_ref()
            .and_then(|x| x.values.clone())
            .unwrap_or_default(),
        "query-string" => c
            .query_string_config
            .as_ref()
            .and_then(|x| x.values.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|kv| format!("{}={}", kv.key.unwrap_or_default(), kv.value.unwrap_or_default()))
            .collect(),
        "source-ip" => c
            .source_ip_config
            .as_ref()
            .and_then(|x| x.values.clone())
            .unwrap_or_default(),
        other => {
            return Err(validation(format!(
                "Condition field '{other}' must be one of [http-header, http-request-method, host-header, path-pattern, query-string, source-ip]"
            )))
        }
    })
}

fn data_condition(c: &elbv2::RuleCondition) -> Result<berth_elb::Condition, EcsError> {
    let field = c.field.as_deref().unwrap_or_default();
    let values = condition_values(c)?;
    Ok(match field {
        "path-pattern" => berth_elb::Condition::PathPattern(values),
        "host-header" => berth_elb::Condition::HostHeader(values),
        "http-header" => berth_elb::Condition::HttpHeader {
            name: c
                .http_header_config
                .as_ref()
                .and_then(|h| h.http_header_name.clone())
                .unwrap_or_default(),
            values,
        },
        "http-request-method" => berth_elb::Condition::Method(values),
        "query-string" => berth_elb::Condition::QueryString(
            c.query_string_config
                .as_ref()
                .and_then(|x| x.values.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|kv| (kv.key, kv.value.unwrap_or_default()))
                .collect(),
        ),
        "source-ip" => berth_elb::Condition::SourceIp(
            values
                .iter()
                .map(|v| {
                    v.parse::<ipnet::IpNet>()
                        .map_err(|_| validation(format!("Source IP '{v}' must be a CIDR block")))
                })
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(validation(format!(
                "Condition field '{other}' is not valid"
            )))
        }
    })
}

fn data_action(a: &elbv2::Action) -> berth_elb::Action {
    match a.r#type.as_deref() {
        Some("fixed-response") => {
            let c = a.fixed_response_config.clone().unwrap_or_default();
            berth_elb::Action::FixedResponse {
                status: c.status_code.and_then(|s| s.parse().ok()).unwrap_or(200),
                content_type: c.content_type,
                body: c.message_body,
            }
        }
        Some("redirect") => {
            let c = a.redirect_config.clone().unwrap_or_default();
            berth_elb::Action::Redirect {
                protocol: c.protocol.unwrap_or_else(|| "#{protocol}".into()),
                host: c.host.unwrap_or_else(|| "#{host}".into()),
                port: c.port.unwrap_or_else(|| "#{port}".into()),
                path: c.path.unwrap_or_else(|| "/#{path}".into()),
                query: c.query.unwrap_or_else(|| "#{query}".into()),
                status: if c.status_code.as_deref() == Some("HTTP_301") {
                    301
                } else {
                    302
                },
            }
        }
        _ => {
            let tuples = a
                .forward_config
                .as_ref()
                .and_then(|f| f.target_groups.clone())
                .unwrap_or_default();
            let groups: Vec<(String, u32)> = if tuples.is_empty() {
                a.target_group_arn.iter().map(|g| (g.clone(), 1)).collect()
            } else {
                tuples
                    .into_iter()
                    .filter_map(|t| {
                        Some((t.target_group_arn?, t.weight.unwrap_or(1).max(0) as u32))
                    })
                    .collect()
            };
            berth_elb::Action::Forward { groups }
        }
    }
}

fn attr_secs(a: &BTreeMap<String, String>, key: &str) -> Duration {
    Duration::from_secs(a.get(key).and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Everything the ELB records say, read at once.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub lbs: Vec<(KeyValue, LbRecord)>,
    pub tgs: Vec<(KeyValue, TgRecord)>,
    pub listeners: Vec<(KeyValue, elbv2::Listener)>,
    pub rules: Vec<(KeyValue, elbv2::Rule)>,
    pub targets: Vec<(KeyValue, TargetRecord)>,
}

impl Snapshot {
    fn lb(&self, arn: &str) -> Option<&(KeyValue, LbRecord)> {
        self.lbs
            .iter()
            .find(|(_, r)| r.lb.load_balancer_arn.as_deref() == Some(arn))
    }
    fn tg(&self, arn: &str) -> Option<&(KeyValue, TgRecord)> {
        self.tgs
            .iter()
            .find(|(_, r)| r.tg.target_group_arn.as_deref() == Some(arn))
    }
    fn listener(&self, arn: &str) -> Option<&(KeyValue, elbv2::Listener)> {
        self.listeners
            .iter()
            .find(|(_, l)| l.listener_arn.as_deref() == Some(arn))
    }
    /// A listener by its id (the last part of its ARN and key).
    fn listener_by_id(&self, id: &str) -> Option<&(KeyValue, elbv2::Listener)> {
        let tail = format!("/{id}");
        self.listeners
            .iter()
            .find(|(kv, _)| kv.key.ends_with(&tail))
    }
    fn rule(&self, arn: &str) -> Option<&(KeyValue, elbv2::Rule)> {
        self.rules
            .iter()
            .find(|(_, r)| r.rule_arn.as_deref() == Some(arn))
    }
    fn rules_of(&self, listener_arn: &str) -> Vec<&(KeyValue, elbv2::Rule)> {
        let Some((_, lid)) = listener_of(listener_arn) else {
            return Vec::new();
        };
        let prefix = keys::elb_rules_of(&lid);
        self.rules
            .iter()
            .filter(|(kv, _)| kv.key.starts_with(&prefix))
            .collect()
    }
    fn targets_of(&self, tg_arn: &str) -> Vec<&(KeyValue, TargetRecord)> {
        let Some((_, gid)) = tg_of(tg_arn) else {
            return Vec::new();
        };
        let prefix = keys::elb_targets_of(&gid);
        self.targets
            .iter()
            .filter(|(kv, _)| kv.key.starts_with(&prefix))
            .collect()
    }
    fn listeners_of(&self, lb_arn: &str) -> Vec<&(KeyValue, elbv2::Listener)> {
        self.listeners
            .iter()
            .filter(|(_, l)| l.load_balancer_arn.as_deref() == Some(lb_arn))
            .collect()
    }
    /// A target group's record.
    pub(crate) fn target_group(&self, arn: &str) -> Option<&TgRecord> {
        self.tg(arn).map(|(_, r)| r)
    }

    /// The target is registered or draining.
    pub(crate) fn has_target(&self, r: &crate::targets::TargetRef) -> bool {
        self.target(r).is_some()
    }

    /// The target is registered and not draining.
    pub(crate) fn has_live_target(&self, r: &crate::targets::TargetRef) -> bool {
        self.target(r).is_some_and(|t| t.deregistered_at.is_none())
    }

    fn target(&self, r: &crate::targets::TargetRef) -> Option<&TargetRecord> {
        let (_, gid) = tg_of(&r.group)?;
        let key = keys::elb_target(&gid, &r.id, r.port);
        self.targets
            .iter()
            .find(|(kv, _)| kv.key == key)
            .map(|(_, t)| t)
    }

    /// A group's `deregistration_delay.timeout_seconds` (0 for a group that is gone).
    pub(crate) fn deregistration_delay(&self, group: &str) -> f64 {
        self.target_group(group)
            .map(|g| attr_secs(&g.attributes, "deregistration_delay.timeout_seconds").as_secs_f64())
            .unwrap_or(0.0)
    }

    fn lb_type_of(&self, lb_arn: &str) -> String {
        self.lb(lb_arn)
            .and_then(|(_, r)| r.lb.r#type.clone())
            .unwrap_or_else(|| "application".into())
    }
}

fn rule_priority(r: &elbv2::Rule) -> u32 {
    r.priority
        .as_deref()
        .and_then(|p| p.parse().ok())
        .unwrap_or(u32::MAX)
}

impl Control {
    /// Answers one ELB request; the output shape as JSON, for the XML writer.
    pub async fn handle_elb(&self, caller: &Caller, req: ElbRequest) -> Result<Value, EcsError> {
        if let Some(instance) = &caller.instance {
            return Err(err(
                ErrorKind::AccessDenied,
                format!("the key of the agent of {instance} may only speak the agent protocol"),
            ));
        }
        let reads_only = matches!(
            req,
            ElbRequest::DescribeListeners(_)
                | ElbRequest::DescribeLoadBalancerAttributes(_)
                | ElbRequest::DescribeLoadBalancers(_)
                | ElbRequest::DescribeRules(_)
                | ElbRequest::DescribeTags(_)
                | ElbRequest::DescribeTargetGroupAttributes(_)
                | ElbRequest::DescribeTargetGroups(_)
                | ElbRequest::DescribeTargetHealth(_)
        );
        let _one_writer = if reads_only {
            None
        } else {
            Some(self.elb_lock.lock().await)
        };
        let snap = self.elb_snapshot().await?;
        let answer = match req {
            ElbRequest::CreateLoadBalancer(r) => self.create_load_balancer(&snap, r).await,
            ElbRequest::DescribeLoadBalancers(r) => describe_load_balancers(&snap, r),
            ElbRequest::DeleteLoadBalancer(r) => self.delete_load_balancer(&snap, r).await,
            ElbRequest::DescribeLoadBalancerAttributes(r) => {
                let arn = r.load_balancer_arn.unwrap_or_default();
                let (_, rec) = find_lb(&snap, &arn)?;
                out(elbv2::DescribeLoadBalancerAttributesOutput {
                    attributes: Some(lb_attributes(rec)),
                })
            }
            ElbRequest::ModifyLoadBalancerAttributes(r) => {
                self.modify_load_balancer_attributes(&snap, r).await
            }
            ElbRequest::CreateTargetGroup(r) => self.create_target_group(&snap, r).await,
            ElbRequest::DescribeTargetGroups(r) => describe_target_groups(&snap, r),
            ElbRequest::ModifyTargetGroup(r) => self.modify_target_group(&snap, r).await,
            ElbRequest::DeleteTargetGroup(r) => self.delete_target_group(&snap, r).await,
            ElbRequest::DescribeTargetGroupAttributes(r) => {
                let arn = r.target_group_arn.unwrap_or_default();
                let (_, rec) = find_tg(&snap, &arn)?;
                out(elbv2::DescribeTargetGroupAttributesOutput {
                    attributes: Some(tg_attributes(rec)),
                })
            }
            ElbRequest::ModifyTargetGroupAttributes(r) => {
                self.modify_target_group_attributes(&snap, r).await
            }
            ElbRequest::CreateListener(r) => self.create_listener(&snap, r).await,
            ElbRequest::DescribeListeners(r) => describe_listeners(&snap, r),
            ElbRequest::ModifyListener(r) => self.modify_listener(&snap, r).await,
            ElbRequest::DeleteListener(r) => self.delete_listener(&snap, r).await,
            ElbRequest::CreateRule(r) => self.create_rule(&snap, r).await,
            ElbRequest::DescribeRules(r) => describe_rules(&snap, r),
            ElbRequest::ModifyRule(r) => self.modify_rule(&snap, r).await,
            ElbRequest::DeleteRule(r) => self.delete_rule(&snap, r).await,
            ElbRequest::SetRulePriorities(r) => self.set_rule_priorities(&snap, r).await,
            ElbRequest::RegisterTargets(r) => {
                let arn = r.target_group_arn.unwrap_or_default();
                self.register_targets(&snap, &arn, r.targets.unwrap_or_default())
                    .await?;
                out(elbv2::RegisterTargetsOutput {})
            }
            ElbRequest::DeregisterTargets(r) => {
                let arn = r.target_group_arn.unwrap_or_default();
                self.deregister_targets(&snap, &arn, r.targets.unwrap_or_default(), true)
                    .await?;
                out(elbv2::DeregisterTargetsOutput {})
            }
            ElbRequest::DescribeTargetHealth(r) => self.describe_target_health(&snap, r),
            ElbRequest::AddTags(r) => self.add_tags(&snap, r).await,
            ElbRequest::RemoveTags(r) => self.remove_tags(&snap, r).await,
            ElbRequest::DescribeTags(r) => self.describe_tags(&snap, r).await,
        };
        if !reads_only && answer.is_ok() {
            self.sync_elb().await;
        }
        answer
    }

    /// Every ELB record.
    pub(crate) async fn elb_snapshot(&self) -> Result<Snapshot, EcsError> {
        let kvs = self
            .store
            .range(keys::ELB, None, None)
            .await
            .map_err(store_error)?;
        let mut s = Snapshot::default();
        for kv in kvs {
            if kv.key.starts_with(keys::ELB_LBS) {
                let r = decode(&kv)?;
                s.lbs.push((kv, r));
            } else if kv.key.starts_with(keys::ELB_TGS) {
                let r = decode(&kv)?;
                s.tgs.push((kv, r));
            } else if kv.key.starts_with(keys::ELB_LISTENERS) {
                let r = decode(&kv)?;
                s.listeners.push((kv, r));
            } else if kv.key.starts_with("elb/rules/") {
                let r = decode(&kv)?;
                s.rules.push((kv, r));
            } else if kv.key.starts_with(keys::ELB_TARGETS) {
                let r = decode(&kv)?;
                s.targets.push((kv, r));
            }
        }
        Ok(s)
    }

    async fn commit_elb(&self, txn: Txn) -> Result<(), EcsError> {
        if self.commit(txn).await? {
            Ok(())
        } else {
            Err(err(
                ErrorKind::Server,
                "the load balancer configuration changed meanwhile; try again",
            ))
        }
    }

    fn elb_arn(&self, resource: &str) -> String {
        format!(
            "arn:aws:elasticloadbalancing:{}:{}:{resource}",
            self.config.region, self.config.account_id
        )
    }

    async fn create_load_balancer(
        &self,
        snap: &Snapshot,
        r: elbv2::CreateLoadBalancerInput,
    ) -> Result<Value, EcsError> {
        let name = r.name.clone().unwrap_or_default();
        check_name("Load balancer", &name)?;
        let kind = r.r#type.clone().unwrap_or_else(|| "application".into());
        let short = match kind.as_str() {
            "application" => "app",
            "network" => "net",
            "gateway" => {
                return Err(invalid_config(
                    "Gateway load balancers are not supported by Berth",
                ))
            }
            other => {
                return Err(validation(format!(
                    "Load balancer type '{other}' must be one of [application, network, gateway]"
                )))
            }
        };
        let scheme = r.scheme.clone().unwrap_or_else(|| "internet-facing".into());
        if !matches!(scheme.as_str(), "internet-facing" | "internal") {
            return Err(err(
                ErrorKind::InvalidScheme,
                format!("Scheme '{scheme}' must be 'internet-facing' or 'internal'"),
            ));
        }
        if r.ip_address_type.as_deref().is_some_and(|t| t != "ipv4") {
            return Err(invalid_config(
                "Only the 'ipv4' IP address type is supported by Berth",
            ));
        }
        if r.customer_owned_ipv4_pool.is_some() || r.ipam_pools.is_some() {
            return Err(invalid_config(
                "Customer-owned and IPAM address pools are not supported by Berth",
            ));
        }
        let tags = r.tags.clone().unwrap_or_default();
        check_tags(&tags)?;
        let mut subnets = r.subnets.clone().unwrap_or_default();
        for m in r.subnet_mappings.iter().flatten() {
            if m.allocation_id.is_some() || m.private_i_pv4_address.is_some() {
                return Err(invalid_config(
                    "Elastic IP allocations and fixed private addresses are not supported by Berth",
                ));
            }
            subnets.extend(m.subnet_id.clone());
        }
        if let Some((_, existing)) = snap
            .lbs
            .iter()
            .find(|(_, l)| l.lb.load_balancer_name.as_deref() == Some(name.as_str()))
        {
            // ELB answers a repeated create with the same settings with the existing one.
            if existing.lb.r#type.as_deref() == Some(kind.as_str())
                && existing.lb.scheme.as_deref() == Some(scheme.as_str())
            {
                return out(elbv2::CreateLoadBalancerOutput {
                    load_balancers: Some(vec![existing.lb.clone()]),
                });
            }
            return Err(err(
                ErrorKind::DuplicateLoadBalancerName,
                format!("A load balancer with the same name '{name}' exists, but with different settings"),
            ));
        }
        let id = random_id();
        let arn = self.elb_arn(&format!("loadbalancer/{short}/{name}/{id}"));
        let region = &self.config.region;
        let prefix = if scheme == "internal" {
            "internal-"
        } else {
            ""
        };
        let zones: Vec<elbv2::AvailabilityZone> = if subnets.is_empty() {
            vec![elbv2::AvailabilityZone {
                zone_name: Some(format!("{region}a")),
                ..Default::default()
            }]
        } else {
            subnets
                .iter()
                .enumerate()
                .map(|(i, s)| elbv2::AvailabilityZone {
                    zone_name: Some(format!("{region}{}", (b'a' + (i % 6) as u8) as char)),
                    subnet_id: Some(s.clone()),
                    ..Default::default()
                })
                .collect()
        };
        let lb = elbv2::LoadBalancer {
            load_balancer_arn: Some(arn.clone()),
            load_balancer_name: Some(name.clone()),
            dns_name: Some(format!(
                "{prefix}{name}-{}.{region}.elb.localhost",
                u32::from_str_radix(&id[..8], 16).unwrap_or(0)
            )),
            canonical_hosted_zone_id: Some("ZBERTHLOCAL".into()),
            created_time: Some(now_epoch()),
            scheme: Some(scheme),
            vpc_id: None,
            state: Some(elbv2::LoadBalancerState {
                code: Some("active".into()),
                reason: None,
            }),
            r#type: Some(kind.clone()),
            availability_zones: Some(zones),
            security_groups: (kind == "application")
                .then(|| r.security_groups.clone().unwrap_or_default()),
            ip_address_type: Some("ipv4".into()),
            ..Default::default()
        };
        let rec = LbRecord {
            lb: lb.clone(),
            attributes: lb_defaults(&kind),
        };
        let key = keys::elb_lb(&name);
        let mut txn = Txn::new().unchanged(&key, None).put(key, encode(&rec)?);
        if !tags.is_empty() {
            txn = txn.put(keys::elb_tags(&arn), encode(&tags)?);
        }
        self.commit_elb(txn).await?;
        out(elbv2::CreateLoadBalancerOutput {
            load_balancers: Some(vec![lb]),
        })
    }

    async fn delete_load_balancer(
        &self,
        snap: &Snapshot,
        r: elbv2::DeleteLoadBalancerInput,
    ) -> Result<Value, EcsError> {
        let arn = r.load_balancer_arn.unwrap_or_default();
        let (kv, rec) = find_lb(snap, &arn)?;
        if rec
            .attributes
            .get("deletion_protection.enabled")
            .map(String::as_str)
            == Some("true")
        {
            return Err(err(
                ErrorKind::OperationNotPermitted,
                format!("Load balancer '{arn}' cannot be deleted because deletion protection is enabled"),
            ));
        }
        // Its listeners and rules go with it, and the target groups forget them.
        let mut txn = Txn::new()
            .unchanged(&kv.key, Some(kv))
            .delete(kv.key.clone());
        let mut releases: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (lkv, l) in snap.listeners_of(&arn) {
            let larn = l.listener_arn.clone().unwrap_or_default();
            txn = txn.unchanged(&lkv.key, Some(lkv)).delete(lkv.key.clone());
            txn = txn.delete(keys::elb_tags(&larn));
            for (rkv, rule) in snap.rules_of(&larn) {
                txn = txn.delete(rkv.key.clone());
                txn = txn.delete(keys::elb_tags(rule.rule_arn.as_deref().unwrap_or_default()));
            }
            for g in self.groups_used_by(snap, &larn) {
                releases.entry(g).or_default().insert(larn.clone());
            }
        }
        for (g, gone) in releases {
            if let Some((gkv, grec)) = snap.tg(&g) {
                let mut grec = grec.clone();
                grec.users.retain(|u| !gone.contains(u));
                txn = txn.replace(gkv, encode(&grec)?);
            }
        }
        txn = txn.delete(keys::elb_tags(&arn));
        self.commit_elb(txn).await?;
        out(elbv2::DeleteLoadBalancerOutput {})
    }

    /// Every target group a listener's rules (its default one included) forward to.
    fn groups_used_by(&self, snap: &Snapshot, listener_arn: &str) -> BTreeSet<String> {
        let defaults = snap
            .listener(listener_arn)
            .and_then(|(_, l)| l.default_actions.clone())
            .unwrap_or_default();
        groups_after(snap, listener_arn, &defaults, None)
    }

    async fn modify_load_balancer_attributes(
        &self,
        snap: &Snapshot,
        r: elbv2::ModifyLoadBalancerAttributesInput,
    ) -> Result<Value, EcsError> {
        let arn = r.load_balancer_arn.unwrap_or_default();
        let (kv, rec) = find_lb(snap, &arn)?;
        let kind = rec.lb.r#type.clone().unwrap_or_default();
        let mut rec = rec.clone();
        for a in r.attributes.unwrap_or_default() {
            let (k, v) = (a.key.unwrap_or_default(), a.value.unwrap_or_default());
            check_lb_attribute(&kind, &k, &v)?;
            rec.attributes.insert(k, v);
        }
        self.commit_elb(Txn::new().replace(kv, encode(&rec)?))
            .await?;
        out(elbv2::ModifyLoadBalancerAttributesOutput {
            attributes: Some(lb_attributes(&rec)),
        })
    }

    async fn create_target_group(
        &self,
        snap: &Snapshot,
        r: elbv2::CreateTargetGroupInput,
    ) -> Result<Value, EcsError> {
        let name = r.name.clone().unwrap_or_default();
        check_name("Target group", &name)?;
        let tags = r.tags.clone().unwrap_or_default();
        check_tags(&tags)?;
        let arn = self.elb_arn(&format!("targetgroup/{name}/{}", random_id()));
        let rec = new_target_group(arn.clone(), &r)?;
        if let Some((_, existing)) = snap
            .tgs
            .iter()
            .find(|(_, t)| t.tg.target_group_name.as_deref() == Some(name.as_str()))
        {
            let mut same = rec.tg.clone();
            same.target_group_arn = existing.tg.target_group_arn.clone();
            same.load_balancer_arns = None;
            let mut theirs = existing.tg.clone();
            theirs.load_balancer_arns = None;
            if same == theirs {
                return out(elbv2::CreateTargetGroupOutput {
                    target_groups: Some(vec![present_tg(existing)]),
                });
            }
            return Err(err(
                ErrorKind::DuplicateTargetGroupName,
                format!("A target group with the same name '{name}' exists, but with different settings"),
            ));
        }
        let key = keys::elb_tg(&name);
        let mut txn = Txn::new().unchanged(&key, None).put(key, encode(&rec)?);
        if !tags.is_empty() {
            txn = txn.put(keys::elb_tags(&arn), encode(&tags)?);
        }
        self.commit_elb(txn).await?;
        out(elbv2::CreateTargetGroupOutput {
            target_groups: Some(vec![present_tg(&rec)]),
        })
    }

    async fn modify_target_group(
        &self,
        snap: &Snapshot,
        r: elbv2::ModifyTargetGroupInput,
    ) -> Result<Value, EcsError> {
        let arn = r.target_group_arn.clone().unwrap_or_default();
        let (kv, rec) = find_tg(snap, &arn)?;
        let mut rec = rec.clone();
        apply_health(
            &mut rec.tg,
            HealthInput {
                enabled: r.health_check_enabled,
                interval: r.health_check_interval_seconds,
                path: r.health_check_path,
                port: r.health_check_port,
                protocol: r.health_check_protocol,
                timeout: r.health_check_timeout_seconds,
                healthy: r.healthy_threshold_count,
                unhealthy: r.unhealthy_threshold_count,
                matcher: r.matcher,
            },
        )?;
        self.commit_elb(Txn::new().replace(kv, encode(&rec)?))
            .await?;
        out(elbv2::ModifyTargetGroupOutput {
            target_groups: Some(vec![present_tg(&rec)]),
        })
    }

    async fn delete_target_group(
        &self,
        snap: &Snapshot,
        r: elbv2::DeleteTargetGroupInput,
    ) -> Result<Value, EcsError> {
        let arn = r.target_group_arn.unwrap_or_default();
        // ELB answers the deletion of a group that does not exist with success.
        let Some((kv, rec)) = snap.tg(&arn) else {
            if tg_of(&arn).is_none() {
                return Err(validation(format!(
                    "'{arn}' is not a valid target group ARN"
                )));
            }
            return out(elbv2::DeleteTargetGroupOutput {});
        };
        if !rec.users.is_empty() {
            return Err(err(
                ErrorKind::ElbResourceInUse,
                format!("Target group '{arn}' is currently in use by a listener or a rule"),
            ));
        }
        let mut txn = Txn::new().replace(kv, Vec::new()).delete(kv.key.clone());
        txn = txn.delete(keys::elb_tags(&arn));
        for (tkv, _) in snap.targets_of(&arn) {
            txn = txn.delete(tkv.key.clone());
        }
        self.commit_elb(txn).await?;
        out(elbv2::DeleteTargetGroupOutput {})
    }

    async fn modify_target_group_attributes(
        &self,
        snap: &Snapshot,
        r: elbv2::ModifyTargetGroupAttributesInput,
    ) -> Result<Value, EcsError> {
        let arn = r.target_group_arn.unwrap_or_default();
        let (kv, rec) = find_tg(snap, &arn)?;
        let protocol = rec.tg.protocol.clone().unwrap_or_default();
        let mut rec = rec.clone();
        for a in r.attributes.unwrap_or_default() {
            let (k, v) = (a.key.unwrap_or_default(), a.value.unwrap_or_default());
            check_tg_attribute(&protocol, &k, &v)?;
            rec.attributes.insert(k, v);
        }
        let slow = rec
            .attributes
            .get("slow_start.duration_seconds")
            .is_some_and(|v| v != "0");
        let least = rec
            .attributes
            .get("load_balancing.algorithm.type")
            .is_some_and(|v| v == "least_outstanding_requests");
        if slow && least {
            return Err(invalid_config(
                "Slow start mode cannot be combined with the least outstanding requests algorithm",
            ));
        }
        self.commit_elb(Txn::new().replace(kv, encode(&rec)?))
            .await?;
        out(elbv2::ModifyTargetGroupAttributesOutput {
            attributes: Some(tg_attributes(&rec)),
        })
    }

    /// Checks actions against the records: their groups exist, speak the listener's protocol,
    /// and belong to no other load balancer.
    fn check_forwards(
        &self,
        snap: &Snapshot,
        actions: &[elbv2::Action],
        lb_arn: &str,
        listener_protocol: &str,
    ) -> Result<(), EcsError> {
        for g in forwards(actions) {
            let (_, rec) = find_tg(snap, &g)?;
            let gp = rec.tg.protocol.as_deref().unwrap_or_default();
            let ok = matches!((listener_protocol, gp), ("HTTP", "HTTP") | ("TCP", "TCP"));
            if !ok {
                return Err(err(
                    ErrorKind::IncompatibleProtocols,
                    format!("The protocol of target group '{g}' ({gp}) is not compatible with the listener's protocol ({listener_protocol})"),
                ));
            }
            let other = rec
                .users
                .iter()
                .map(|u| lb_arn_of_listener(u))
                .find(|l| l != lb_arn);
            if let Some(other) = other {
                return Err(err(
                    ErrorKind::TargetGroupAssociationLimit,
                    format!("The following target groups cannot be associated with more than one load balancer: {g} (it is used by {other})"),
                ));
            }
        }
        Ok(())
    }

    /// Adds to `txn` the target groups' `users` changes when `listener_arn` forwards to `now`
    /// instead of `before`.
    fn retarget(
        &self,
        snap: &Snapshot,
        mut txn: Txn,
        listener_arn: &str,
        before: &BTreeSet<String>,
        now: &BTreeSet<String>,
    ) -> Result<Txn, EcsError> {
        for g in before.symmetric_difference(now) {
            if let Some((kv, rec)) = snap.tg(g) {
                let mut rec = rec.clone();
                if now.contains(g) {
                    rec.users.insert(listener_arn.to_string());
                } else {
                    rec.users.remove(listener_arn);
                }
                txn = txn.replace(kv, encode(&rec)?);
            }
        }
        // The groups that stay are guarded too: they must still exist.
        for g in before.intersection(now) {
            if let Some((kv, _)) = snap.tg(g) {
                txn = txn.unchanged(&kv.key, Some(kv));
            }
        }
        Ok(txn)
    }

    async fn create_listener(
        &self,
        snap: &Snapshot,
        r: elbv2::CreateListenerInput,
    ) -> Result<Value, EcsError> {
        let lb_arn = r.load_balancer_arn.clone().unwrap_or_default();
        let (lb_kv, lb) = find_lb(snap, &lb_arn)?;
        let kind = lb.lb.r#type.clone().unwrap_or_default();
        let protocol = r
            .protocol
            .clone()
            .unwrap_or_else(|| if kind == "network" { "TCP" } else { "HTTP" }.into());
        check_listener_protocol(&kind, &protocol)?;
        refuse_tls(
            r.mutual_authentication.as_ref(),
            r.certificates.is_some() || r.ssl_policy.is_some() || r.alpn_policy.is_some(),
        )?;
        let port = check_port(
            r.port
                .ok_or_else(|| validation("A listener port must be specified"))?,
        )?;
        if let Some((_, l)) = snap
            .listeners
            .iter()
            .find(|(_, l)| l.port == Some(i32::from(port)))
        {
            if l.load_balancer_arn.as_deref() == Some(lb_arn.as_str()) {
                return Err(err(
                    ErrorKind::DuplicateListener,
                    "A listener already exists on this port for this load balancer",
                ));
            }
            return Err(invalid_config(format!(
                "Port {port} is used by a listener of load balancer '{}': Berth's load balancers share this host's ports",
                l.load_balancer_arn.as_deref().unwrap_or_default()
            )));
        }
        if let Some(proxy) = &self.elb {
            proxy
                .check_port(port)
                .map_err(|e| invalid_config(e.to_string()))?;
        }
        let mut actions = r.default_actions.clone().unwrap_or_default();
        check_actions(&actions, &protocol)?;
        self.check_forwards(snap, &actions, &lb_arn, &protocol)?;
        normalize_actions(&mut actions);
        let tags = r.tags.clone().unwrap_or_default();
        check_tags(&tags)?;
        let (lb_name, lb_id) = lb_of(&lb_arn).unwrap_or_default();
        let short = if kind == "network" { "net" } else { "app" };
        let id = random_id();
        let arn = self.elb_arn(&format!("listener/{short}/{lb_name}/{lb_id}/{id}"));
        let listener = elbv2::Listener {
            listener_arn: Some(arn.clone()),
            load_balancer_arn: Some(lb_arn.clone()),
            port: Some(i32::from(port)),
            protocol: Some(protocol),
            default_actions: Some(actions.clone()),
            ..Default::default()
        };
        let rule_id = random_id();
        let default_rule = elbv2::Rule {
            rule_arn: Some(self.elb_arn(&format!(
                "listener-rule/{short}/{lb_name}/{lb_id}/{id}/{rule_id}"
            ))),
            priority: Some("default".into()),
            conditions: Some(Vec::new()),
            actions: Some(actions.clone()),
            is_default: Some(true),
            ..Default::default()
        };
        let key = keys::elb_listener(&lb_id, &id);
        let mut txn = Txn::new()
            .unchanged(&lb_kv.key, Some(lb_kv))
            .unchanged(&key, None)
            .put(key, encode(&listener)?)
            .put(keys::elb_rule(&id, &rule_id), encode(&default_rule)?);
        txn = self.retarget(snap, txn, &arn, &BTreeSet::new(), &forwards(&actions))?;
        if !tags.is_empty() {
            txn = txn.put(keys::elb_tags(&arn), encode(&tags)?);
        }
        self.commit_elb(txn).await?;
        out(elbv2::CreateListenerOutput {
            listeners: Some(vec![listener]),
        })
    }

    async fn modify_listener(
        &self,
        snap: &Snapshot,
        r: elbv2::ModifyListenerInput,
    ) -> Result<Value, EcsError> {
        let arn = r.listener_arn.clone().unwrap_or_default();
        let (kv, l) = find_listener(snap, &arn)?;
        let lb_arn = l.load_balancer_arn.clone().unwrap_or_default();
        let kind = snap.lb_type_of(&lb_arn);
        let mut l = l.clone();
        refuse_tls(
            r.mutual_authentication.as_ref(),
            r.certificates.is_some() || r.ssl_policy.is_some() || r.alpn_policy.is_some(),
        )?;
        if let Some(p) = r.protocol {
            check_listener_protocol(&kind, &p)?;
            l.protocol = Some(p);
        }
        if let Some(p) = r.port {
            let port = check_port(p)?;
            if let Some((_, o)) = snap
                .listeners
                .iter()
                .find(|(_, o)| o.port == Some(p) && o.listener_arn.as_deref() != Some(arn.as_str()))
            {
                if o.load_balancer_arn == l.load_balancer_arn {
                    return Err(err(
                        ErrorKind::DuplicateListener,
                        "A listener already exists on this port for this load balancer",
                    ));
                }
                return Err(invalid_config(format!(
                    "Port {port} is used by a listener of load balancer '{}': Berth's load balancers share this host's ports",
                    o.load_balancer_arn.as_deref().unwrap_or_default()
                )));
            }
            if l.port != Some(p) {
                if let Some(proxy) = &self.elb {
                    proxy
                        .check_port(port)
                        .map_err(|e| invalid_config(e.to_string()))?;
                }
            }
            l.port = Some(p);
        }
        let protocol = l.protocol.clone().unwrap_or_default();
        let before = self.groups_used_by(snap, &arn);
        let mut txn = Txn::new();
        if let Some(mut actions) = r.default_actions {
            check_actions(&actions, &protocol)?;
            self.check_forwards(snap, &actions, &lb_arn, &protocol)?;
            normalize_actions(&mut actions);
            l.default_actions = Some(actions.clone());
            if let Some((rkv, rule)) = snap
                .rules_of(&arn)
                .into_iter()
                .find(|(_, r)| r.is_default == Some(true))
            {
                let mut rule = rule.clone();
                rule.actions = Some(actions);
                txn = txn.replace(rkv, encode(&rule)?);
            }
        } else {
            // The groups it keeps must still suit a changed protocol.
            let actions = l.default_actions.clone().unwrap_or_default();
            self.check_forwards(snap, &actions, &lb_arn, &protocol)?;
        }
        let after = groups_after(
            snap,
            &arn,
            l.default_actions.as_deref().unwrap_or_default(),
            None,
        );
        txn = txn.replace(kv, encode(&l)?);
        txn = self.retarget(snap, txn, &arn, &before, &after)?;
        self.commit_elb(txn).await?;
        out(elbv2::ModifyListenerOutput {
            listeners: Some(vec![l]),
        })
    }

    async fn delete_listener(
        &self,
        snap: &Snapshot,
        r: elbv2::DeleteListenerInput,
    ) -> Result<Value, EcsError> {
        let arn = r.listener_arn.unwrap_or_default();
        let (kv, _) = find_listener(snap, &arn)?;
        let before = self.groups_used_by(snap, &arn);
        let mut txn = Txn::new().replace(kv, Vec::new()).delete(kv.key.clone());
        for (rkv, rule) in snap.rules_of(&arn) {
            txn = txn.delete(rkv.key.clone());
            txn = txn.delete(keys::elb_tags(rule.rule_arn.as_deref().unwrap_or_default()));
        }
        txn = txn.delete(keys::elb_tags(&arn));
        txn = self.retarget(snap, txn, &arn, &before, &BTreeSet::new())?;
        self.commit_elb(txn).await?;
        out(elbv2::DeleteListenerOutput {})
    }

    async fn create_rule(
        &self,
        snap: &Snapshot,
        r: elbv2::CreateRuleInput,
    ) -> Result<Value, EcsError> {
        let larn = r.listener_arn.clone().unwrap_or_default();
        let (lkv, l) = find_listener(snap, &larn)?;
        let protocol = l.protocol.clone().unwrap_or_default();
        if protocol != "HTTP" {
            return Err(invalid_config(
                "Rules with conditions are only supported on listeners of application load balancers",
            ));
        }
        if r.transforms.is_some() {
            return Err(invalid_config(
                "Rule transforms are not supported by Berth yet",
            ));
        }
        let priority = r.priority.unwrap_or_default();
        if !(1..=50_000).contains(&priority) {
            return Err(validation(format!(
                "Priority '{priority}' must be from 1 to 50000"
            )));
        }
        let rules = snap.rules_of(&larn);
        if rules
            .iter()
            .any(|(_, x)| x.priority.as_deref() == Some(priority.to_string().as_str()))
        {
            return Err(err(
                ErrorKind::PriorityInUse,
                format!("Priority '{priority}' is currently in use"),
            ));
        }
        if rules.len() > MAX_RULES {
            return Err(err(
                ErrorKind::TooManyRules,
                format!("A listener can have at most {MAX_RULES} rules"),
            ));
        }
        let conditions = r.conditions.clone().unwrap_or_default();
        if conditions.is_empty() {
            return Err(validation("A rule must have at least one condition"));
        }
        check_conditions(&conditions)?;
        for c in &conditions {
            data_condition(c)?;
        }
        let mut actions = r.actions.clone().unwrap_or_default();
        let lb_arn = l.load_balancer_arn.clone().unwrap_or_default();
        check_actions(&actions, &protocol)?;
        self.check_forwards(snap, &actions, &lb_arn, &protocol)?;
        normalize_actions(&mut actions);
        let tags = r.tags.clone().unwrap_or_default();
        check_tags(&tags)?;
        let (_, lid) = listener_of(&larn).unwrap_or_default();
        let id = random_id();
        let arn = self.elb_arn(&format!(
            "{}/{id}",
            larn.split_once(':')
                .map(|_| larn
                    .rsplit_once(":listener/")
                    .map(|(_, r)| r)
                    .unwrap_or_default())
                .map(|r| format!("listener-rule/{r}"))
                .unwrap_or_default()
        ));
        let rule = elbv2::Rule {
            rule_arn: Some(arn.clone()),
            priority: Some(priority.to_string()),
            conditions: Some(conditions),
            actions: Some(actions.clone()),
            is_default: Some(false),
            ..Default::default()
        };
        let before = self.groups_used_by(snap, &larn);
        let mut after = before.clone();
        after.extend(forwards(&actions));
        let mut txn = Txn::new()
            .unchanged(&lkv.key, Some(lkv))
            .put(keys::elb_rule(&lid, &id), encode(&rule)?);
        // Priorities are unique: guard every rule of the listener as read.
        for (rkv, _) in &rules {
            txn = txn.unchanged(&rkv.key, Some(rkv));
        }
        txn = self.retarget(snap, txn, &larn, &before, &after)?;
        if !tags.is_empty() {
            txn = txn.put(keys::elb_tags(&arn), encode(&tags)?);
        }
        self.commit_elb(txn).await?;
        out(elbv2::CreateRuleOutput {
            rules: Some(vec![rule]),
        })
    }

    async fn modify_rule(
        &self,
        snap: &Snapshot,
        r: elbv2::ModifyRuleInput,
    ) -> Result<Value, EcsError> {
        let arn = r.rule_arn.clone().unwrap_or_default();
        let (kv, rule) = find_rule(snap, &arn)?;
        let (lid, _) = rule_of(&arn).unwrap_or_default();
        let (lkv, l) = snap.listener_by_id(&lid).ok_or_else(|| {
            err(
                ErrorKind::ListenerNotFound,
                "The rule's listener was not found",
            )
        })?;
        let larn = l.listener_arn.clone().unwrap_or_default();
        let protocol = l.protocol.clone().unwrap_or_default();
        let mut rule = rule.clone();
        if r.transforms.is_some() {
            return Err(invalid_config(
                "Rule transforms are not supported by Berth yet",
            ));
        }
        let mut txn = Txn::new();
        if let Some(c) = r.conditions {
            if rule.is_default == Some(true) {
                return Err(err(
                    ErrorKind::OperationNotPermitted,
                    "The conditions of a default rule cannot be modified",
                ));
            }
            if c.is_empty() {
                return Err(validation("A rule must have at least one condition"));
            }
            check_conditions(&c)?;
            for x in &c {
                data_condition(x)?;
            }
            rule.conditions = Some(c);
        }
        if let Some(mut actions) = r.actions {
            let lb_arn = l.load_balancer_arn.clone().unwrap_or_default();
            check_actions(&actions, &protocol)?;
            self.check_forwards(snap, &actions, &lb_arn, &protocol)?;
            normalize_actions(&mut actions);
            rule.actions = Some(actions.clone());
            if rule.is_default == Some(true) {
                let mut l = l.clone();
                l.default_actions = Some(actions);
                txn = txn.replace(lkv, encode(&l)?);
            }
        }
        let before = self.groups_used_by(snap, &larn);
        let defaults = if rule.is_default == Some(true) {
            rule.actions.clone().unwrap_or_default()
        } else {
            l.default_actions.clone().unwrap_or_default()
        };
        let after = groups_after(
            snap,
            &larn,
            &defaults,
            Some((arn.as_str(), rule.actions.as_deref())),
        );
        txn = txn.replace(kv, encode(&rule)?);
        txn = self.retarget(snap, txn, &larn, &before, &after)?;
        self.commit_elb(txn).await?;
        out(elbv2::ModifyRuleOutput {
            rules: Some(vec![rule]),
        })
    }

    async fn delete_rule(
        &self,
        snap: &Snapshot,
        r: elbv2::DeleteRuleInput,
    ) -> Result<Value, EcsError> {
        let arn = r.rule_arn.unwrap_or_default();
        let (kv, rule) = find_rule(snap, &arn)?;
        if rule.is_default == Some(true) {
            return Err(err(
                ErrorKind::OperationNotPermitted,
                "A listener's default rule cannot be deleted",
            ));
        }
        let (lid, _) = rule_of(&arn).unwrap_or_default();
        let larn = snap
            .listener_by_id(&lid)
            .and_then(|(_, l)| l.listener_arn.clone())
            .unwrap_or_default();
        let before = self.groups_used_by(snap, &larn);
        let defaults = snap
            .listener(&larn)
            .and_then(|(_, l)| l.default_actions.clone())
            .unwrap_or_default();
        let after = groups_after(snap, &larn, &defaults, Some((arn.as_str(), None)));
        let mut txn = Txn::new().replace(kv, Vec::new()).delete(kv.key.clone());
        txn = txn.delete(keys::elb_tags(&arn));
        txn = self.retarget(snap, txn, &larn, &before, &after)?;
        self.commit_elb(txn).await?;
        out(elbv2::DeleteRuleOutput {})
    }

    async fn set_rule_priorities(
        &self,
        snap: &Snapshot,
        r: elbv2::SetRulePrioritiesInput,
    ) -> Result<Value, EcsError> {
        let pairs = r.rule_priorities.unwrap_or_default();
        let mut changed: Vec<(KeyValue, elbv2::Rule)> = Vec::new();
        let mut listener: Option<String> = None;
        for p in &pairs {
            let arn = p.rule_arn.clone().unwrap_or_default();
            let (kv, rule) = find_rule(snap, &arn)?;
            if rule.is_default == Some(true) {
                return Err(err(
                    ErrorKind::OperationNotPermitted,
                    "The priority of a default rule cannot be changed",
                ));
            }
            let priority = p.priority.unwrap_or_default();
            if !(1..=50_000).contains(&priority) {
                return Err(validation(format!(
                    "Priority '{priority}' must be from 1 to 50000"
                )));
            }
            let (lid, _) = rule_of(&arn).unwrap_or_default();
            if listener.get_or_insert(lid.clone()) != &lid {
                return Err(validation("The rules must all belong to one listener"));
            }
            let mut rule = rule.clone();
            rule.priority = Some(priority.to_string());
            changed.push((kv.clone(), rule));
        }
        // Priorities after the change must be unique across the listener.
        let lid = listener.unwrap_or_default();
        let mut seen = BTreeMap::new();
        for (kv, rule) in snap
            .rules
            .iter()
            .filter(|(kv, _)| kv.key.starts_with(&keys::elb_rules_of(&lid)))
        {
            let rule = changed
                .iter()
                .find(|(c, _)| c.key == kv.key)
                .map(|(_, r)| r)
                .unwrap_or(rule);
            if rule.is_default == Some(true) {
                continue;
            }
            let p = rule.priority.clone().unwrap_or_default();
            if let Some(other) = seen.insert(p.clone(), kv.key.clone()) {
                let _ = other;
                return Err(err(
                    ErrorKind::PriorityInUse,
                    format!("Priority '{p}' is currently in use"),
                ));
            }
        }
        let mut txn = Txn::new();
        for (kv, rule) in &changed {
            txn = txn.replace(kv, encode(rule)?);
        }
        self.commit_elb(txn).await?;
        out(elbv2::SetRulePrioritiesOutput {
            rules: Some(changed.into_iter().map(|(_, r)| r).collect()),
        })
    }

    /// Registers targets in a group (the API's call, and ECS's for a service's tasks).
    pub(crate) async fn register_targets(
        &self,
        snap: &Snapshot,
        tg_arn: &str,
        targets: Vec<elbv2::TargetDescription>,
    ) -> Result<(), EcsError> {
        let (gkv, rec) = find_tg(snap, tg_arn)?;
        let (_, gid) = tg_of(tg_arn).unwrap_or_default();
        let ip = rec.tg.target_type.as_deref() == Some("ip");
        let mut txn = Txn::new().unchanged(&gkv.key, Some(gkv));
        let existing = snap.targets_of(tg_arn);
        let mut bad = Vec::new();
        let now = now_epoch();
        let mut added = 0;
        for t in &targets {
            let id = t.id.clone().unwrap_or_default();
            let port = t.port.or(rec.tg.port).unwrap_or(0);
            check_port(port)?;
            if ip {
                if id.parse::<Ipv4Addr>().is_err() {
                    bad.push(id);
                    continue;
                }
            } else if self.instance_address(&id).await?.is_none() {
                bad.push(id);
                continue;
            }
            let key = keys::elb_target(&gid, &id, port);
            let seen = existing.iter().find(|(kv, _)| kv.key == key);
            // Registering again a draining target makes it a target again.
            if let Some((kv, r)) = seen {
                if r.deregistered_at.is_none() {
                    continue;
                }
                let _ = kv;
            } else {
                added += 1;
            }
            let record = TargetRecord {
                id: id.clone(),
                port,
                availability_zone: t.availability_zone.clone(),
                registered_at: now,
                deregistered_at: None,
            };
            txn = txn.put(key, encode(&record)?);
        }
        if !bad.is_empty() {
            return Err(err(
                ErrorKind::InvalidTarget,
                if ip {
                    format!(
                        "The following targets are not valid IPv4 addresses: '{}'",
                        bad.join("', '")
                    )
                } else {
                    format!(
                        "The following targets are not valid instances: '{}' (no container instance has that EC2 instance id)",
                        bad.join("', '")
                    )
                },
            ));
        }
        if existing.len() + added > MAX_TARGETS {
            return Err(err(
                ErrorKind::TooManyTargets,
                format!("A target group can have at most {MAX_TARGETS} targets"),
            ));
        }
        self.commit_elb(txn).await
    }

    /// Deregisters targets: each drains (no new requests) until its group's deregistration
    /// delay passes or its in-flight requests end, then is forgotten by
    /// [`Control::sweep_drained`].
    pub(crate) async fn deregister_targets(
        &self,
        snap: &Snapshot,
        tg_arn: &str,
        targets: Vec<elbv2::TargetDescription>,
        strict: bool,
    ) -> Result<(), EcsError> {
        let (gkv, rec) = find_tg(snap, tg_arn)?;
        let (_, gid) = tg_of(tg_arn).unwrap_or_default();
        let existing = snap.targets_of(tg_arn);
        let mut txn = Txn::new().unchanged(&gkv.key, Some(gkv));
        let now = now_epoch();
        let mut missing = Vec::new();
        for t in &targets {
            let id = t.id.clone().unwrap_or_default();
            let port = t.port.or(rec.tg.port).unwrap_or(0);
            let key = keys::elb_target(&gid, &id, port);
            match existing.iter().find(|(kv, _)| kv.key == key) {
                Some((kv, r)) if r.deregistered_at.is_none() => {
                    let mut r = r.clone();
                    r.deregistered_at = Some(now);
                    txn = txn.replace(kv, encode(&r)?);
                }
                Some(_) => {}
                None => missing.push(format!("{id}:{port}")),
            }
        }
        if strict && !missing.is_empty() {
            return Err(err(
                ErrorKind::InvalidTarget,
                format!(
                    "The following targets are not registered in target group '{tg_arn}': '{}'",
                    missing.join("', '")
                ),
            ));
        }
        self.commit_elb(txn).await
    }

    fn describe_target_health(
        &self,
        snap: &Snapshot,
        r: elbv2::DescribeTargetHealthInput,
    ) -> Result<Value, EcsError> {
        let arn = r.target_group_arn.clone().unwrap_or_default();
        let (_, rec) = find_tg(snap, &arn)?;
        let registered = snap.targets_of(&arn);
        let hc_port = |port: i32| match rec.tg.health_check_port.as_deref() {
            Some("traffic-port") | None => port.to_string(),
            Some(p) => p.to_string(),
        };
        let mut out_list = Vec::new();
        let wanted: Vec<(String, i32)> = match &r.targets {
            Some(t) if !t.is_empty() => t
                .iter()
                .map(|t| {
                    (
                        t.id.clone().unwrap_or_default(),
                        t.port.or(rec.tg.port).unwrap_or(0),
                    )
                })
                .collect(),
            _ => registered
                .iter()
                .map(|(_, t)| (t.id.clone(), t.port))
                .collect(),
        };
        for (id, port) in wanted {
            let found = registered
                .iter()
                .find(|(_, t)| t.id == id && t.port == port);
            let (state, reason) = match (found, &self.elb) {
                (None, _) => (
                    berth_elb::health::State::Unused,
                    Some(berth_elb::health::Reason::NotRegistered),
                ),
                (Some(_), Some(proxy)) => proxy.target_health(&arn, &id, port as u16),
                (Some(_), None) => (
                    berth_elb::health::State::Unavailable,
                    Some(berth_elb::health::Reason::InternalError),
                ),
            };
            out_list.push(elbv2::TargetHealthDescription {
                target: Some(elbv2::TargetDescription {
                    id: Some(id.clone()),
                    port: Some(port),
                    availability_zone: found.and_then(|(_, t)| t.availability_zone.clone()),
                    ..Default::default()
                }),
                health_check_port: Some(hc_port(port)),
                target_health: Some(elbv2::TargetHealth {
                    state: Some(state.as_str().into()),
                    reason: reason.as_ref().map(|r| r.as_str().to_string()),
                    description: reason.as_ref().map(|r| r.description()),
                }),
                ..Default::default()
            });
        }
        out(elbv2::DescribeTargetHealthOutput {
            target_health_descriptions: Some(out_list),
        })
    }

    /// The key an ARN's tags live under, once the resource is known to exist.
    fn elb_taggable(&self, snap: &Snapshot, arn: &str) -> Result<String, EcsError> {
        let known = if lb_of(arn).is_some() {
            find_lb(snap, arn).map(|_| ())
        } else if tg_of(arn).is_some() {
            find_tg(snap, arn).map(|_| ())
        } else if listener_of(arn).is_some() {
            find_listener(snap, arn).map(|_| ())
        } else if rule_of(arn).is_some() {
            find_rule(snap, arn).map(|_| ())
        } else {
            Err(validation(format!("'{arn}' is not a valid resource ARN")))
        };
        known.map(|()| keys::elb_tags(arn))
    }

    async fn tags_of_elb(
        &self,
        key: &str,
    ) -> Result<(Option<KeyValue>, Vec<elbv2::Tag>), EcsError> {
        let kv = self.store.get(key).await.map_err(store_error)?;
        let tags = match &kv {
            Some(kv) => decode(kv)?,
            None => Vec::new(),
        };
        Ok((kv, tags))
    }

    async fn add_tags(&self, snap: &Snapshot, r: elbv2::AddTagsInput) -> Result<Value, EcsError> {
        let new = r.tags.unwrap_or_default();
        check_tags(&new)?;
        let mut txn = Txn::new();
        for arn in r.resource_arns.unwrap_or_default() {
            let key = self.elb_taggable(snap, &arn)?;
            let (kv, mut tags) = self.tags_of_elb(&key).await?;
            for t in &new {
                tags.retain(|x| x.key != t.key);
                tags.push(t.clone());
            }
            if tags.len() > MAX_TAGS {
                return Err(err(
                    ErrorKind::TooManyElbTags,
                    format!("Resource '{arn}' would have more than {MAX_TAGS} tags"),
                ));
            }
            txn = txn.unchanged(&key, kv.as_ref()).put(key, encode(&tags)?);
        }
        self.commit_elb(txn).await?;
        out(elbv2::AddTagsOutput {})
    }

    async fn remove_tags(
        &self,
        snap: &Snapshot,
        r: elbv2::RemoveTagsInput,
    ) -> Result<Value, EcsError> {
        let gone = r.tag_keys.unwrap_or_default();
        let mut txn = Txn::new();
        for arn in r.resource_arns.unwrap_or_default() {
            let key = self.elb_taggable(snap, &arn)?;
            let (kv, mut tags) = self.tags_of_elb(&key).await?;
            tags.retain(|t| !gone.iter().any(|g| Some(g) == t.key.as_ref()));
            txn = txn.unchanged(&key, kv.as_ref()).put(key, encode(&tags)?);
        }
        self.commit_elb(txn).await?;
        out(elbv2::RemoveTagsOutput {})
    }

    async fn describe_tags(
        &self,
        snap: &Snapshot,
        r: elbv2::DescribeTagsInput,
    ) -> Result<Value, EcsError> {
        let arns = r.resource_arns.unwrap_or_default();
        if arns.len() > 20 {
            return Err(validation(
                "At most 20 resource ARNs can be described at once",
            ));
        }
        let mut descriptions = Vec::new();
        for arn in arns {
            let key = self.elb_taggable(snap, &arn)?;
            let (_, tags) = self.tags_of_elb(&key).await?;
            descriptions.push(elbv2::TagDescription {
                resource_arn: Some(arn),
                tags: Some(tags),
            });
        }
        out(elbv2::DescribeTagsOutput {
            tag_descriptions: Some(descriptions),
        })
    }

    /// Where an `instance` target's traffic goes: the container instance with that EC2
    /// instance id, at the address its agent advertised (`berth.address`), or this host.
    pub(crate) async fn instance_address(&self, ec2_id: &str) -> Result<Option<IpAddr>, EcsError> {
        let kvs = self
            .store
            .range("instances/", None, None)
            .await
            .map_err(store_error)?;
        for kv in kvs {
            let ci: berth_api::ecs::ContainerInstance = decode(&kv)?;
            if ci.ec2_instance_id.as_deref() == Some(ec2_id)
                && ci.status.as_deref() != Some("INACTIVE")
            {
                let advertised = ci
                    .attributes
                    .iter()
                    .flatten()
                    .find(|a| a.name.as_deref() == Some(crate::ADDRESS_ATTRIBUTE))
                    .and_then(|a| a.value.as_deref())
                    .and_then(|v| v.parse().ok());
                return Ok(Some(advertised.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))));
            }
        }
        Ok(None)
    }

    /// The data plane's configuration from the records.
    async fn elb_config(&self, snap: &Snapshot) -> Result<berth_elb::Config, EcsError> {
        let mut config = berth_elb::Config::default();
        let mut addresses: BTreeMap<String, Option<IpAddr>> = BTreeMap::new();
        for (_, rec) in &snap.tgs {
            let tg = &rec.tg;
            let arn = tg.target_group_arn.clone().unwrap_or_default();
            let http_check = tg.health_check_protocol.as_deref() == Some("HTTP");
            let mut targets = Vec::new();
            for (_, t) in snap.targets_of(&arn) {
                let ip = if tg.target_type.as_deref() == Some("ip") {
                    t.id.parse().ok()
                } else {
                    match addresses.get(&t.id) {
                        Some(a) => *a,
                        None => {
                            let a = self.instance_address(&t.id).await?;
                            addresses.insert(t.id.clone(), a);
                            a
                        }
                    }
                };
                let Some(ip) = ip else { continue };
                targets.push(berth_elb::Target {
                    id: t.id.clone(),
                    port: t.port as u16,
                    addr: SocketAddr::new(ip, t.port as u16),
                    registered_at: t.registered_at,
                    deregistered_at: t.deregistered_at,
                });
            }
            let a = &rec.attributes;
            let sticky = a.get("stickiness.enabled").map(String::as_str) == Some("true");
            config.groups.insert(
                arn.clone(),
                berth_elb::Group {
                    arn,
                    protocol: if tg.protocol.as_deref() == Some("TCP") {
                        berth_elb::Protocol::Tcp
                    } else {
                        berth_elb::Protocol::Http
                    },
                    algorithm: if a.get("load_balancing.algorithm.type").map(String::as_str)
                        == Some("least_outstanding_requests")
                    {
                        berth_elb::Algorithm::LeastOutstandingRequests
                    } else {
                        berth_elb::Algorithm::RoundRobin
                    },
                    health: berth_elb::HealthCheck {
                        enabled: tg.health_check_enabled != Some(false),
                        protocol: if http_check {
                            berth_elb::Protocol::Http
                        } else {
                            berth_elb::Protocol::Tcp
                        },
                        port: tg.health_check_port.as_deref().and_then(|p| p.parse().ok()),
                        path: tg.health_check_path.clone().unwrap_or_else(|| "/".into()),
                        interval: Duration::from_secs(
                            tg.health_check_interval_seconds.unwrap_or(30).max(1) as u64,
                        ),
                        timeout: Duration::from_secs(
                            tg.health_check_timeout_seconds.unwrap_or(5).max(1) as u64,
                        ),
                        healthy_threshold: tg.healthy_threshold_count.unwrap_or(5) as u32,
                        unhealthy_threshold: tg.unhealthy_threshold_count.unwrap_or(2) as u32,
                        matcher: tg
                            .matcher
                            .as_ref()
                            .and_then(|m| m.http_code.clone())
                            .unwrap_or_else(|| "200".into()),
                    },
                    deregistration_delay: attr_secs(a, "deregistration_delay.timeout_seconds"),
                    slow_start: attr_secs(a, "slow_start.duration_seconds"),
                    stickiness: (sticky
                        && a.get("stickiness.type").map(String::as_str) == Some("lb_cookie"))
                    .then(|| attr_secs(a, "stickiness.lb_cookie.duration_seconds")),
                    targets,
                },
            );
        }
        let mut listeners = Vec::new();
        for (_, l) in &snap.listeners {
            let arn = l.listener_arn.clone().unwrap_or_default();
            let protocol = data_protocol(l.protocol.as_deref().unwrap_or("HTTP"))?;
            let mut rules: Vec<&elbv2::Rule> = snap
                .rules_of(&arn)
                .into_iter()
                .map(|(_, r)| r)
                .filter(|r| r.is_default != Some(true))
                .collect();
            rules.sort_by_key(|r| rule_priority(r));
            let mut out_rules = Vec::new();
            for r in rules {
                out_rules.push(berth_elb::Rule {
                    arn: r.rule_arn.clone().unwrap_or_default(),
                    conditions: r
                        .conditions
                        .iter()
                        .flatten()
                        .map(data_condition)
                        .collect::<Result<_, _>>()?,
                    action: data_action(
                        r.actions
                            .as_deref()
                            .unwrap_or_default()
                            .first()
                            .cloned()
                            .as_ref()
                            .unwrap_or(&elbv2::Action::default()),
                    ),
                });
            }
            let default = l
                .default_actions
                .as_deref()
                .unwrap_or_default()
                .first()
                .cloned()
                .unwrap_or_default();
            out_rules.push(berth_elb::Rule {
                arn: format!("{arn}/default"),
                conditions: Vec::new(),
                action: data_action(&default),
            });
            let lb_arn = l.load_balancer_arn.clone().unwrap_or_default();
            let idle = snap
                .lb(&lb_arn)
                .map(|(_, r)| attr_secs(&r.attributes, "idle_timeout.timeout_seconds"))
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(60));
            listeners.push(berth_elb::Listener {
                arn,
                load_balancer: lb_arn,
                port: l.port.unwrap_or(0) as u16,
                protocol,
                idle_timeout: idle,
                rules: out_rules,
            });
        }
        config.listeners = listeners;
        Ok(config)
    }

    /// Rebuilds the data plane's configuration from the records and applies it.
    pub async fn sync_elb(&self) {
        let Some(proxy) = &self.elb else { return };
        let _one_at_a_time = self.elb_sync.lock().await;
        let result = async {
            let snap = self.elb_snapshot().await?;
            self.elb_config(&snap).await
        }
        .await;
        match result {
            Ok(config) => {
                for (listener, e) in proxy.apply(config) {
                    tracing::warn!(listener, error = %e, "a listener cannot listen");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the load balancer configuration could not be read")
            }
        }
    }

    /// Forgets deregistered targets whose draining is over: the group's deregistration delay
    /// has passed, or no request is in flight to them any more. Returns how many.
    pub async fn sweep_drained(&self) -> Result<usize, EcsError> {
        let _one_writer = self.elb_lock.lock().await;
        let snap = self.elb_snapshot().await?;
        let now = now_epoch();
        let mut txn = Txn::new();
        let mut n = 0;
        for (kv, t) in &snap.targets {
            let Some(at) = t.deregistered_at else {
                continue;
            };
            let gid = kv
                .key
                .trim_start_matches(keys::ELB_TARGETS)
                .split('/')
                .next()
                .unwrap_or_default();
            let Some((_, g)) = snap.tgs.iter().find(|(_, g)| {
                g.tg.target_group_arn
                    .as_deref()
                    .and_then(tg_of)
                    .map(|(_, id)| id)
                    .as_deref()
                    == Some(gid)
            }) else {
                txn = txn.replace(kv, Vec::new()).delete(kv.key.clone());
                n += 1;
                continue;
            };
            let garn = g.tg.target_group_arn.clone().unwrap_or_default();
            let delay =
                attr_secs(&g.attributes, "deregistration_delay.timeout_seconds").as_secs_f64();
            let idle = self
                .elb
                .as_ref()
                .is_none_or(|p| p.in_flight(&garn, &t.id, t.port as u16) == 0);
            // A moment's grace after deregistering: a request routed just before it is counted.
            if now >= at + delay || (idle && now >= at + DRAIN_GRACE) {
                txn = txn.replace(kv, Vec::new()).delete(kv.key.clone());
                n += 1;
            }
        }
        if n > 0 {
            // A conflict: someone changed a target meanwhile; the next sweep retries.
            if self.commit(txn).await? {
                drop(_one_writer);
                self.sync_elb().await;
                // Tasks waiting for their targets to drain can stop now.
                self.wake_lb_services().await;
                return Ok(n);
            }
        }
        Ok(0)
    }
}

/// How long a deregistered target with nothing in flight is kept before it is forgotten.
const DRAIN_GRACE: f64 = 1.0;

fn find_lb<'a>(snap: &'a Snapshot, arn: &str) -> Result<(&'a KeyValue, &'a LbRecord), EcsError> {
    if lb_of(arn).is_none() {
        return Err(validation(format!(
            "'{arn}' is not a valid load balancer ARN"
        )));
    }
    snap.lb(arn).map(|(k, r)| (k, r)).ok_or_else(|| {
        err(
            ErrorKind::LoadBalancerNotFound,
            format!("Load balancer '{arn}' not found"),
        )
    })
}

fn find_tg<'a>(snap: &'a Snapshot, arn: &str) -> Result<(&'a KeyValue, &'a TgRecord), EcsError> {
    if tg_of(arn).is_none() {
        return Err(validation(format!(
            "'{arn}' is not a valid target group ARN"
        )));
    }
    snap.tg(arn).map(|(k, r)| (k, r)).ok_or_else(|| {
        err(
            ErrorKind::TargetGroupNotFound,
            format!("Target groups '{arn}' not found"),
        )
    })
}

fn find_listener<'a>(
    snap: &'a Snapshot,
    arn: &str,
) -> Result<(&'a KeyValue, &'a elbv2::Listener), EcsError> {
    if listener_of(arn).is_none() {
        return Err(validation(format!("'{arn}' is not a valid listener ARN")));
    }
    snap.listener(arn).map(|(k, r)| (k, r)).ok_or_else(|| {
        err(
            ErrorKind::ListenerNotFound,
            format!("Listener '{arn}' not found"),
        )
    })
}

fn find_rule<'a>(
    snap: &'a Snapshot,
    arn: &str,
) -> Result<(&'a KeyValue, &'a elbv2::Rule), EcsError> {
    if rule_of(arn).is_none() {
        return Err(validation(format!("'{arn}' is not a valid rule ARN")));
    }
    snap.rule(arn)
        .map(|(k, r)| (k, r))
        .ok_or_else(|| err(ErrorKind::RuleNotFound, "One or more rules not found"))
}

fn present_tg(rec: &TgRecord) -> elbv2::TargetGroup {
    let mut tg = rec.tg.clone();
    let lbs: BTreeSet<String> = rec.users.iter().map(|u| lb_arn_of_listener(u)).collect();
    tg.load_balancer_arns = Some(lbs.into_iter().collect());
    tg
}

fn lb_attributes(rec: &LbRecord) -> Vec<elbv2::LoadBalancerAttribute> {
    rec.attributes
        .iter()
        .map(|(k, v)| elbv2::LoadBalancerAttribute {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

fn tg_attributes(rec: &TgRecord) -> Vec<elbv2::TargetGroupAttribute> {
    rec.attributes
        .iter()
        .map(|(k, v)| elbv2::TargetGroupAttribute {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

/// A page of `items` after `marker` (the index to start at), ELB's PageSize up to 400.
fn page<T: Clone>(
    items: Vec<T>,
    marker: Option<&str>,
    size: Option<i32>,
) -> Result<(Vec<T>, Option<String>), EcsError> {
    let size = match size {
        None => MAX_PAGE as usize,
        Some(n) if (1..=MAX_PAGE).contains(&n) => n as usize,
        Some(n) => {
            return Err(validation(format!(
                "Page size '{n}' must be from 1 to {MAX_PAGE}"
            )))
        }
    };
    let start = match marker {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| validation(format!("Marker '{m}' is not valid")))?,
    };
    let end = start.saturating_add(size).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((
        items
            .get(start.min(items.len())..end)
            .unwrap_or_default()
            .to_vec(),
        next,
    ))
}

fn describe_load_balancers(
    snap: &Snapshot,
    r: elbv2::DescribeLoadBalancersInput,
) -> Result<Value, EcsError> {
    let mut lbs: Vec<elbv2::LoadBalancer> = Vec::new();
    match (&r.load_balancer_arns, &r.names) {
        (Some(_), Some(_)) => {
            return Err(validation(
                "Load balancer names and load balancer ARNs cannot be specified at the same time",
            ))
        }
        (Some(arns), None) => {
            for a in arns {
                lbs.push(find_lb(snap, a)?.1.lb.clone());
            }
        }
        (None, Some(names)) => {
            for n in names {
                let found = snap
                    .lbs
                    .iter()
                    .find(|(_, l)| l.lb.load_balancer_name.as_deref() == Some(n.as_str()))
                    .ok_or_else(|| {
                        err(
                            ErrorKind::LoadBalancerNotFound,
                            format!("Load balancers '[{n}]' not found"),
                        )
                    })?;
                lbs.push(found.1.lb.clone());
            }
        }
        (None, None) => lbs = snap.lbs.iter().map(|(_, l)| l.lb.clone()).collect(),
    }
    let (items, next) = page(lbs, r.marker.as_deref(), r.page_size)?;
    out(elbv2::DescribeLoadBalancersOutput {
        load_balancers: Some(items),
        next_marker: next,
    })
}

fn describe_target_groups(
    snap: &Snapshot,
    r: elbv2::DescribeTargetGroupsInput,
) -> Result<Value, EcsError> {
    let given = [
        r.load_balancer_arn.is_some(),
        r.target_group_arns.is_some(),
        r.names.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given > 1 {
        return Err(validation(
            "Only one of load balancer ARN, target group ARNs or names can be specified",
        ));
    }
    let mut tgs = Vec::new();
    if let Some(lb) = &r.load_balancer_arn {
        find_lb(snap, lb)?;
        tgs = snap
            .tgs
            .iter()
            .filter(|(_, t)| t.users.iter().any(|u| lb_arn_of_listener(u) == *lb))
            .map(|(_, t)| present_tg(t))
            .collect();
    } else if let Some(arns) = &r.target_group_arns {
        for a in arns {
            tgs.push(present_tg(find_tg(snap, a)?.1));
        }
    } else if let Some(names) = &r.names {
        for n in names {
            let found = snap
                .tgs
                .iter()
                .find(|(_, t)| t.tg.target_group_name.as_deref() == Some(n.as_str()))
                .ok_or_else(|| {
                    err(
                        ErrorKind::TargetGroupNotFound,
                        format!("One or more target groups not found: '{n}'"),
                    )
                })?;
            tgs.push(present_tg(&found.1));
        }
    } else {
        tgs = snap.tgs.iter().map(|(_, t)| present_tg(t)).collect();
    }
    let (items, next) = page(tgs, r.marker.as_deref(), r.page_size)?;
    out(elbv2::DescribeTargetGroupsOutput {
        target_groups: Some(items),
        next_marker: next,
    })
}

/// A describe by parent or by ARNs (exactly one of them): the parent's children, or each
/// ARN's record.
fn by_parent_or_arns<T>(
    parent: Option<&String>,
    arns: Option<&Vec<String>>,
    (parent_name, child_name): (&str, &str),
    children: impl FnOnce(&str) -> Result<Vec<T>, EcsError>,
    find: impl Fn(&str) -> Result<T, EcsError>,
) -> Result<Vec<T>, EcsError> {
    match (parent, arns) {
        (Some(_), Some(_)) => Err(validation(format!(
            "A {parent_name} ARN and {child_name} ARNs cannot be specified at the same time"
        ))),
        (Some(p), None) => children(p),
        (None, Some(arns)) => arns.iter().map(|a| find(a)).collect(),
        (None, None) => Err(validation(format!(
            "You must specify either {child_name} ARNs or a {parent_name} ARN"
        ))),
    }
}

fn describe_listeners(
    snap: &Snapshot,
    r: elbv2::DescribeListenersInput,
) -> Result<Value, EcsError> {
    let listeners = by_parent_or_arns(
        r.load_balancer_arn.as_ref(),
        r.listener_arns.as_ref(),
        ("load balancer", "listener"),
        |lb| {
            find_lb(snap, lb)?;
            Ok(snap
                .listeners_of(lb)
                .into_iter()
                .map(|(_, l)| l.clone())
                .collect())
        },
        |a| find_listener(snap, a).map(|(_, l)| l.clone()),
    )?;
    let (items, next) = page(listeners, r.marker.as_deref(), r.page_size)?;
    out(elbv2::DescribeListenersOutput {
        listeners: Some(items),
        next_marker: next,
    })
}

fn describe_rules(snap: &Snapshot, r: elbv2::DescribeRulesInput) -> Result<Value, EcsError> {
    let mut rules = by_parent_or_arns(
        r.listener_arn.as_ref(),
        r.rule_arns.as_ref(),
        ("listener", "rule"),
        |l| {
            find_listener(snap, l)?;
            Ok(snap
                .rules_of(l)
                .into_iter()
                .map(|(_, r)| r.clone())
                .collect())
        },
        |a| find_rule(snap, a).map(|(_, r)| r.clone()),
    )?;
    rules.sort_by_key(rule_priority);
    let (items, next) = page(rules, r.marker.as_deref(), r.page_size)?;
    out(elbv2::DescribeRulesOutput {
        rules: Some(items),
        next_marker: next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_split_into_their_parts() {
        let lb = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/web/0123456789abcdef";
        assert_eq!(lb_of(lb), Some(("web".into(), "0123456789abcdef".into())));
        let l = "arn:aws:elasticloadbalancing:us-east-1:000000000000:listener/app/web/0123456789abcdef/aaaa";
        assert_eq!(
            listener_of(l),
            Some(("0123456789abcdef".into(), "aaaa".into()))
        );
        assert_eq!(lb_arn_of_listener(l), lb, "a listener's load balancer");
        let r = "arn:aws:elasticloadbalancing:us-east-1:000000000000:listener-rule/app/web/0123456789abcdef/aaaa/bbbb";
        assert_eq!(rule_of(r), Some(("aaaa".into(), "bbbb".into())));
        let g =
            "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/api/fedcba9876543210";
        assert_eq!(tg_of(g), Some(("api".into(), "fedcba9876543210".into())));
        assert_eq!(
            tg_of(lb),
            None,
            "a load balancer ARN is not a target group's"
        );
        assert_eq!(lb_of("arn:aws:ecs:us-east-1:0:cluster/x"), None);
    }

    #[test]
    fn names_follow_elb_rules() {
        assert!(check_name("Load balancer", "web-1").is_ok());
        for bad in ["", "-web", "web-", "web_1", &"a".repeat(33), "internal-web"] {
            let e = check_name("Load balancer", bad).expect_err(bad);
            assert_eq!(e.kind, ErrorKind::ValidationError, "{bad}");
        }
        assert!(
            check_name("Target group", "internal-ok").is_ok(),
            "only load balancers reserve internal-"
        );
    }

    #[test]
    fn health_check_limits() {
        let mut tg = elbv2::TargetGroup {
            protocol: Some("HTTP".into()),
            health_check_interval_seconds: Some(30),
            health_check_timeout_seconds: Some(5),
            ..Default::default()
        };
        let e = apply_health(
            &mut tg.clone(),
            HealthInput {
                interval: Some(4),
                ..Default::default()
            },
        )
        .expect_err("interval below 5");
        assert!(e.message.contains("interval"), "{}", e.message);
        let e = apply_health(
            &mut tg.clone(),
            HealthInput {
                timeout: Some(30),
                ..Default::default()
            },
        )
        .expect_err("timeout not below the interval");
        assert!(
            e.message.contains("smaller than the interval"),
            "{}",
            e.message
        );
        let e = apply_health(
            &mut tg.clone(),
            HealthInput {
                path: Some("health".into()),
                ..Default::default()
            },
        )
        .expect_err("path without /");
        assert!(e.message.contains("must begin with a '/'"), "{}", e.message);
        apply_health(
            &mut tg,
            HealthInput {
                interval: Some(5),
                timeout: Some(2),
                healthy: Some(2),
                ..Default::default()
            },
        )
        .expect("ELB's minimums are accepted");
        assert_eq!(tg.health_check_interval_seconds, Some(5));
    }

    #[test]
    fn actions_are_checked_by_kind() {
        let fwd = elbv2::Action {
            r#type: Some("forward".into()),
            target_group_arn: Some("arn:aws:elasticloadbalancing:r:a:targetgroup/x/1".into()),
            ..Default::default()
        };
        assert!(check_actions(std::slice::from_ref(&fwd), "HTTP").is_ok());
        let fixed = elbv2::Action {
            r#type: Some("fixed-response".into()),
            fixed_response_config: Some(elbv2::FixedResponseActionConfig {
                status_code: Some("302".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            check_actions(std::slice::from_ref(&fixed), "HTTP").is_err(),
            "3XX is not a fixed response"
        );
        let e = check_actions(&[fixed], "TCP").expect_err("fixed responses need HTTP");
        assert_eq!(e.kind, ErrorKind::InvalidLoadBalancerAction);
        let auth = elbv2::Action {
            r#type: Some("authenticate-oidc".into()),
            ..Default::default()
        };
        assert_eq!(
            check_actions(&[auth], "HTTP").expect_err("not served").kind,
            ErrorKind::InvalidLoadBalancerAction
        );
        let mut actions = vec![fwd];
        normalize_actions(&mut actions);
        let fc = actions[0]
            .forward_config
            .clone()
            .expect("forward config filled in");
        assert_eq!(
            fc.target_groups.expect("groups")[0].weight,
            Some(1),
            "weight 1 by default"
        );
        assert_eq!(actions[0].order, Some(1));
    }

    #[test]
    fn attributes_are_checked() {
        assert!(check_tg_attribute("HTTP", "deregistration_delay.timeout_seconds", "0").is_ok());
        assert!(
            check_tg_attribute("HTTP", "deregistration_delay.timeout_seconds", "3601").is_err()
        );
        assert!(
            check_tg_attribute("HTTP", "slow_start.duration_seconds", "10").is_err(),
            "0 or 30-900"
        );
        assert!(check_tg_attribute(
            "HTTP",
            "load_balancing.algorithm.type",
            "least_outstanding_requests"
        )
        .is_ok());
        assert!(
            check_tg_attribute("HTTP", "made.up", "1").is_err(),
            "unknown keys are refused, not stored"
        );
        assert!(
            check_tg_attribute("TCP", "slow_start.duration_seconds", "30").is_err(),
            "no slow start for TCP"
        );
        assert!(check_lb_attribute("application", "idle_timeout.timeout_seconds", "0").is_err());
        assert!(check_lb_attribute("network", "idle_timeout.timeout_seconds", "60").is_err());
    }

    #[test]
    fn pages_follow_markers() {
        let items: Vec<i32> = (0..5).collect();
        let (a, next) = page(items.clone(), None, Some(2)).expect("first page");
        assert_eq!((a, next.as_deref()), (vec![0, 1], Some("2")));
        let (b, next) = page(items.clone(), Some("4"), Some(2)).expect("last page");
        assert_eq!((b, next), (vec![4], None));
        assert!(
            page(items, None, Some(401)).is_err(),
            "ELB's page size tops out at 400"
        );
    }
}
