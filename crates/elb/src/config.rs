//! What the data plane is told: every listener with its rules in evaluation order, and every
//! target group with its health check and targets. Pure data, built by the control plane from
//! its records and handed whole to [`crate::Proxy::apply`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The whole configuration of one server's load balancers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub listeners: Vec<Listener>,
    /// By target group ARN.
    pub groups: BTreeMap<String, Group>,
}

/// What a listener speaks, and what a target group's targets and health checks speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 (and HTTP/2 cleartext from clients that ask for it).
    Http,
    /// Bytes, copied both ways.
    Tcp,
}

/// One listener: a port on this host, and its rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub arn: String,
    /// The load balancer's ARN.
    pub load_balancer: String,
    pub port: u16,
    pub protocol: Protocol,
    /// A request whose target sends nothing for this long fails with 504 (the load
    /// balancer's `idle_timeout.timeout_seconds`).
    pub idle_timeout: Duration,
    /// In evaluation order: ascending priority, the default rule last (it has no conditions).
    /// A TCP listener has exactly one rule, a forward with no conditions.
    pub rules: Vec<Rule>,
}

/// A rule: all of its conditions must match (each condition matches when any of its values
/// does).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub arn: String,
    pub conditions: Vec<Condition>,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Path patterns, case-sensitive, with `*` (any run) and `?` (one character), matched
    /// against the path without the query string.
    PathPattern(Vec<String>),
    /// Host patterns, case-insensitive, with `*` and `?`, matched against the Host header
    /// without its port.
    HostHeader(Vec<String>),
    /// A header (name case-insensitive) whose value matches one of the patterns
    /// (case-insensitive, `*` and `?`).
    HttpHeader { name: String, values: Vec<String> },
    /// Methods, exact and case-sensitive.
    Method(Vec<String>),
    /// Query pairs; a pair without a key matches any key with that value. Case-insensitive,
    /// `*` and `?`, compared after percent-decoding.
    QueryString(Vec<(Option<String>, String)>),
    /// Client addresses in CIDR blocks.
    SourceIp(Vec<ipnet::IpNet>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// To one of the groups, chosen by weight (weights 0..=999; a group of weight 0 gets
    /// nothing).
    Forward { groups: Vec<(String, u32)> },
    FixedResponse {
        status: u16,
        content_type: Option<String>,
        body: Option<String>,
    },
    /// ELB's redirect: each part may use `#{protocol}`, `#{host}`, `#{port}`, `#{path}` and
    /// `#{query}`, which keep the request's own.
    Redirect {
        protocol: String,
        host: String,
        port: String,
        path: String,
        query: String,
        /// 301 or 302.
        status: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastOutstandingRequests,
}

/// A target group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub arn: String,
    pub protocol: Protocol,
    pub algorithm: Algorithm,
    pub health: HealthCheck,
    /// How long a deregistered target keeps its in-flight requests before it is forgotten.
    pub deregistration_delay: Duration,
    /// How long a newly healthy target takes to get its full share (zero: at once).
    pub slow_start: Duration,
    /// Application groups: a client's requests stay on one target for this long (cookie
    /// `AWSALB`). `None`: no stickiness.
    pub stickiness: Option<Duration>,
    pub targets: Vec<Target>,
}

/// A group's health check, ELB's members.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub enabled: bool,
    pub protocol: Protocol,
    /// `None`: the target's own (traffic) port.
    pub port: Option<u16>,
    /// HTTP only.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// HTTP codes that mean healthy: `"200"`, `"200,202"`, `"200-299"`.
    pub matcher: String,
}

/// One registered (or draining) target.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// As registered: an instance id or an IP address.
    pub id: String,
    pub port: u16,
    /// Where its traffic goes.
    pub addr: SocketAddr,
    /// When it was registered, seconds since the epoch.
    pub registered_at: f64,
    /// When it was deregistered (it drains until `deregistration_delay` after this), seconds
    /// since the epoch.
    pub deregistered_at: Option<f64>,
}
