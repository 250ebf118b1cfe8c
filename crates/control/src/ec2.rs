//! EC2's VPC part: VPCs, subnets, security groups and their rules, availability zones, and the
//! network interfaces of `awsvpc` tasks. One `match` over [`Ec2Request`] on records under
//! `ec2/`; every write is guarded on what it read and taken under one EC2 lock per process.
//!
//! A default VPC (172.31.0.0/16, a default subnet in each of the region's zones, a default
//! security group) exists from the first EC2 request or `awsvpc` task on. Subnets become Docker
//! networks on the agents that run tasks in them; security groups are enforced by the agents on
//! each task's interface (see `berth_agent_proto::SecurityPolicy`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use berth_agent_proto::{SecurityPolicy, SecurityRule};
use berth_api::ec2::{self, Ec2Request};
use berth_api::{EcsError, ErrorKind};
use berth_model::cidr::Cidr;
use berth_store::{KeyValue, Txn};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{decode, encode, keys, store_error, Caller, Control};

/// A VPC's record: the wire shape and its DNS attributes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VpcRecord {
    pub vpc: ec2::Vpc,
    pub dns_support: bool,
    pub dns_hostnames: bool,
}

/// A security group's record: the group (its permissions derived from `rules`) and its rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SgRecord {
    pub group: ec2::SecurityGroup,
    pub rules: Vec<SgRule>,
}

/// One rule: one protocol and port range, one peer (a CIDR block or a security group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SgRule {
    /// `sgr-…`.
    pub id: String,
    pub egress: bool,
    /// `tcp`, `udp`, `icmp` or `-1` (all).
    pub protocol: String,
    /// Ports (tcp, udp) or ICMP type and code; -1 for all.
    pub from: i32,
    pub to: i32,
    pub cidr: Option<String>,
    pub group: Option<String>,
    pub description: Option<String>,
}

impl SgRule {
    fn same(&self, other: &SgRule) -> bool {
        (
            self.egress,
            &self.protocol,
            self.from,
            self.to,
            &self.cidr,
            &self.group,
        ) == (
            other.egress,
            &other.protocol,
            other.from,
            other.to,
            &other.cidr,
            &other.group,
        )
    }
}

/// An `awsvpc` task's network interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct EniRecord {
    pub id: String,
    pub subnet_id: String,
    pub vpc_id: String,
    pub availability_zone: String,
    pub subnet_cidr: String,
    pub private_ip: String,
    pub mac: String,
    #[serde(default)]
    pub public_ip: Option<String>,
    pub groups: Vec<String>,
    pub task_arn: String,
    pub created_at: f64,
}

impl EniRecord {
    /// The keys the interface holds: itself and its addresses.
    pub(crate) fn keys(&self) -> Vec<String> {
        let mut k = vec![
            keys::ec2_eni(&self.id),
            keys::ec2_ip(&self.subnet_id, &self.private_ip),
        ];
        if let Some(p) = &self.public_ip {
            k.push(keys::ec2_public_ip(p));
        }
        k
    }

    /// What the agent needs to set the interface up.
    pub(crate) fn plan(&self) -> berth_agent_proto::TaskNetwork {
        let gateway = Cidr::parse(&self.subnet_cidr)
            .map(|c| c.router().to_string())
            .unwrap_or_default();
        berth_agent_proto::TaskNetwork {
            eni_id: self.id.clone(),
            subnet_id: self.subnet_id.clone(),
            subnet_cidr: self.subnet_cidr.clone(),
            gateway,
            private_ip: self.private_ip.clone(),
            mac: self.mac.clone(),
            public_ip: self.public_ip.clone(),
            security_groups: self.groups.clone(),
        }
    }
}

/// Every EC2 record, read at once.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub vpcs: Vec<(KeyValue, VpcRecord)>,
    pub subnets: Vec<(KeyValue, ec2::Subnet)>,
    pub sgs: Vec<(KeyValue, SgRecord)>,
    pub enis: Vec<(KeyValue, EniRecord)>,
    /// Taken addresses: `SUBNET/IP` and public ones.
    pub ips: BTreeSet<String>,
    pub public_ips: BTreeSet<String>,
}

impl Snapshot {
    fn vpc(&self, id: &str) -> Result<&(KeyValue, VpcRecord), EcsError> {
        self.vpcs
            .iter()
            .find(|(_, v)| v.vpc.vpc_id.as_deref() == Some(id))
            .ok_or_else(|| {
                err(
                    ErrorKind::InvalidVpcIdNotFound,
                    format!("The vpc ID '{id}' does not exist"),
                )
            })
    }

    pub(crate) fn subnet(&self, id: &str) -> Result<&(KeyValue, ec2::Subnet), EcsError> {
        self.subnets
            .iter()
            .find(|(_, s)| s.subnet_id.as_deref() == Some(id))
            .ok_or_else(|| {
                err(
                    ErrorKind::InvalidSubnetIdNotFound,
                    format!("The subnet ID '{id}' does not exist"),
                )
            })
    }

    pub(crate) fn sg(&self, id: &str) -> Result<&(KeyValue, SgRecord), EcsError> {
        self.sgs
            .iter()
            .find(|(_, g)| g.group.group_id.as_deref() == Some(id))
            .ok_or_else(|| {
                err(
                    ErrorKind::InvalidGroupNotFound,
                    format!("The security group '{id}' does not exist"),
                )
            })
    }

    fn sg_by_name(&self, vpc: &str, name: &str) -> Option<&(KeyValue, SgRecord)> {
        self.sgs.iter().find(|(_, g)| {
            g.group.vpc_id.as_deref() == Some(vpc) && g.group.group_name.as_deref() == Some(name)
        })
    }

    fn default_vpc(&self) -> Option<&VpcRecord> {
        self.vpcs
            .iter()
            .map(|(_, v)| v)
            .find(|v| v.vpc.is_default == Some(true))
    }

    /// How many addresses of `subnet` interfaces hold.
    fn used(&self, subnet: &str) -> usize {
        let prefix = format!("{subnet}/");
        self.ips.iter().filter(|k| k.starts_with(&prefix)).count()
    }

    /// The private addresses of the interfaces in security group `sg`.
    fn members(&self, sg: &str) -> Vec<String> {
        self.enis
            .iter()
            .filter(|(_, e)| e.groups.iter().any(|g| g == sg))
            .map(|(_, e)| format!("{}/32", e.private_ip))
            .collect()
    }

    /// The groups with a rule whose source is a group (their rules follow its members).
    pub(crate) fn groups_with_group_sources(&self) -> BTreeSet<String> {
        self.sgs
            .iter()
            .filter(|(_, rec)| {
                rec.rules
                    .iter()
                    .any(|r| r.cidr.is_none() && r.group.is_some())
            })
            .filter_map(|(_, rec)| rec.group.group_id.clone())
            .collect()
    }

    /// The rules of `groups` as an agent enforces them, sources resolved to addresses.
    pub(crate) fn policies(&self, groups: &BTreeSet<String>) -> BTreeMap<String, SecurityPolicy> {
        let mut out = BTreeMap::new();
        for id in groups {
            let Ok((_, rec)) = self.sg(id) else {
                continue;
            };
            let mut p = SecurityPolicy::default();
            for r in &rec.rules {
                let cidrs = match (&r.cidr, &r.group) {
                    (Some(c), _) => vec![c.clone()],
                    (None, Some(g)) => self.members(g),
                    (None, None) => Vec::new(),
                };
                if cidrs.is_empty() {
                    continue;
                }
                let protocol = match r.protocol.as_str() {
                    "-1" => "all",
                    other => other,
                };
                let ports = match protocol {
                    "tcp" | "udp" if r.from >= 0 && r.to >= 0 => Some((r.from as u16, r.to as u16)),
                    _ => None,
                };
                let rule = SecurityRule {
                    protocol: protocol.to_string(),
                    ports,
                    cidrs,
                };
                if r.egress {
                    p.egress.push(rule);
                } else {
                    p.ingress.push(rule);
                }
            }
            out.insert(id.clone(), p);
        }
        out
    }
}

/// Whether the request asks only whether it would succeed (`DryRun`).
fn dry_run(req: &Ec2Request) -> bool {
    match req {
        Ec2Request::AuthorizeSecurityGroupEgress(ec2::AuthorizeSecurityGroupEgressRequest {
            dry_run,
            ..
        })
        | Ec2Request::AuthorizeSecurityGroupIngress(ec2::AuthorizeSecurityGroupIngressRequest {
            dry_run,
            ..
        })
        | Ec2Request::CreateSecurityGroup(ec2::CreateSecurityGroupRequest { dry_run, .. })
        | Ec2Request::CreateSubnet(ec2::CreateSubnetRequest { dry_run, .. })
        | Ec2Request::CreateTags(ec2::CreateTagsRequest { dry_run, .. })
        | Ec2Request::CreateVpc(ec2::CreateVpcRequest { dry_run, .. })
        | Ec2Request::DeleteSecurityGroup(ec2::DeleteSecurityGroupRequest { dry_run, .. })
        | Ec2Request::DeleteSubnet(ec2::DeleteSubnetRequest { dry_run, .. })
        | Ec2Request::DeleteTags(ec2::DeleteTagsRequest { dry_run, .. })
        | Ec2Request::DeleteVpc(ec2::DeleteVpcRequest { dry_run, .. })
        | Ec2Request::DescribeAvailabilityZones(ec2::DescribeAvailabilityZonesRequest {
            dry_run,
            ..
        })
        | Ec2Request::DescribeNetworkInterfaces(ec2::DescribeNetworkInterfacesRequest {
            dry_run,
            ..
        })
        | Ec2Request::DescribeSecurityGroupRules(ec2::DescribeSecurityGroupRulesRequest {
            dry_run,
            ..
        })
        | Ec2Request::DescribeSecurityGroups(ec2::DescribeSecurityGroupsRequest {
            dry_run, ..
        })
        | Ec2Request::DescribeSubnets(ec2::DescribeSubnetsRequest { dry_run, .. })
        | Ec2Request::DescribeTags(ec2::DescribeTagsRequest { dry_run, .. })
        | Ec2Request::DescribeVpcAttribute(ec2::DescribeVpcAttributeRequest { dry_run, .. })
        | Ec2Request::DescribeVpcs(ec2::DescribeVpcsRequest { dry_run, .. })
        | Ec2Request::RevokeSecurityGroupEgress(ec2::RevokeSecurityGroupEgressRequest {
            dry_run,
            ..
        })
        | Ec2Request::RevokeSecurityGroupIngress(ec2::RevokeSecurityGroupIngressRequest {
            dry_run,
            ..
        }) => *dry_run == Some(true),
        Ec2Request::ModifyVpcAttribute(_) => false,
    }
}

fn err(kind: ErrorKind, message: impl Into<String>) -> EcsError {
    EcsError::new(kind, message)
}

fn invalid(message: impl Into<String>) -> EcsError {
    err(ErrorKind::InvalidParameterValue, message)
}

fn out<T: Serialize>(value: T) -> Result<Value, EcsError> {
    serde_json::to_value(value).map_err(|e| EcsError::server(format!("encoding the answer: {e}")))
}

/// EC2's ids: a prefix and 17 hex digits.
pub(crate) fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}-{:017x}",
        rand::random::<u128>() & 0x1_ffff_ffff_ffff_ffff
    )
}

/// An interface's MAC address: locally administered, and the same for the same address (as
/// Docker makes them), so a host that still holds the address's old neighbour entry reaches
/// the next task given it at once instead of after its ARP cache goes stale.
pub(crate) fn mac_for(ip: Ipv4Addr) -> String {
    let b = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}

/// The region's availability zones: `REGIONa`, `b` and `c`, with EC2-style zone ids.
pub(crate) fn zones(region: &str) -> Vec<(String, String)> {
    let short: String = region
        .split('-')
        .enumerate()
        .map(|(i, part)| {
            if i == 0 || part.chars().all(|c| c.is_ascii_digit()) {
                part.to_string()
            } else {
                part.chars().next().map(String::from).unwrap_or_default()
            }
        })
        .collect();
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, z)| (format!("{region}{z}"), format!("{short}-az{}", i + 1)))
        .collect()
}

/// A filter value matches as EC2's do: `*` any run of characters, `?` any one.
fn glob(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut pi, mut vi, mut star, mut mark) = (0, 0, None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether a resource with these fields and tags passes every filter. A filter EC2 does not
/// have for the resource is refused by name.
fn filtered(
    filters: &[ec2::Filter],
    known: &[&str],
    fields: &[(&str, Vec<String>)],
    tags: &[ec2::Tag],
) -> Result<bool, EcsError> {
    for f in filters {
        let name = f.name.as_deref().unwrap_or_default();
        let values = f.values.as_deref().unwrap_or_default();
        let have: Vec<String> = if let Some(key) = name.strip_prefix("tag:") {
            tags.iter()
                .filter(|t| t.key.as_deref() == Some(key))
                .filter_map(|t| t.value.clone())
                .collect()
        } else if name == "tag-key" {
            tags.iter().filter_map(|t| t.key.clone()).collect()
        } else if known.contains(&name) {
            fields
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        } else {
            return Err(invalid(format!("The filter '{name}' is invalid")));
        };
        if !values.iter().any(|p| have.iter().any(|h| glob(p, h))) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn tags_for(
    specs: &Option<Vec<ec2::TagSpecification>>,
    kind: &str,
) -> Result<Vec<ec2::Tag>, EcsError> {
    let mut tags = Vec::new();
    for s in specs.iter().flatten() {
        let t = s.resource_type.as_deref().unwrap_or_default();
        if t != kind {
            return Err(invalid(format!(
                "'{t}' is not a valid taggable resource type for this operation."
            )));
        }
        tags.extend(s.tags.iter().flatten().cloned());
    }
    check_tags(&tags)?;
    Ok(tags)
}

fn check_tags(tags: &[ec2::Tag]) -> Result<(), EcsError> {
    if tags.len() > 50 {
        return Err(err(
            ErrorKind::InvalidParameterValue,
            "The number of tags specified exceeds the limit of 50.",
        ));
    }
    for t in tags {
        let k = t.key.as_deref().unwrap_or_default();
        if k.is_empty() || k.chars().count() > 127 {
            return Err(invalid(format!(
                "Tag keys must be between 1 and 127 characters: '{k}'"
            )));
        }
        if k.starts_with("aws:") {
            return Err(invalid(
                "Tag keys starting with 'aws:' are reserved for internal use",
            ));
        }
        if t.value.as_deref().unwrap_or_default().chars().count() > 255 {
            return Err(invalid(format!(
                "Tag values may be at most 255 characters (key '{k}')"
            )));
        }
    }
    Ok(())
}

/// `tags` with `add` set (a key given again takes the new value).
fn merge_tags(tags: &mut Vec<ec2::Tag>, add: &[ec2::Tag]) {
    for t in add {
        match tags.iter_mut().find(|x| x.key == t.key) {
            Some(x) => x.value = Some(t.value.clone().unwrap_or_default()),
            None => tags.push(ec2::Tag {
                key: t.key.clone(),
                value: Some(t.value.clone().unwrap_or_default()),
            }),
        }
    }
}

/// A protocol as EC2 takes it (`tcp`, `6`, `-1`, `all`…), normalized.
fn protocol(p: &str) -> Result<String, EcsError> {
    Ok(match p.to_ascii_lowercase().as_str() {
        "tcp" | "6" => "tcp",
        "udp" | "17" => "udp",
        "icmp" | "1" => "icmp",
        "-1" | "all" => "-1",
        other => {
            return Err(invalid(format!(
                "Invalid value '{other}' for IP protocol. Unknown protocol."
            )))
        }
    }
    .to_string())
}

/// The flat members of an Authorize or Revoke call (one rule, the older way to give one).
#[derive(Debug, Clone, Copy)]
struct FlatRule<'a> {
    cidr_ip: Option<&'a str>,
    ip_protocol: Option<&'a str>,
    from: Option<i32>,
    to: Option<i32>,
    source_name: Option<&'a str>,
}

/// The flat members of any of the four Authorize and Revoke requests (they share the names).
macro_rules! flat_rule {
    ($r:expr) => {
        FlatRule {
            cidr_ip: $r.cidr_ip.as_deref(),
            ip_protocol: $r.ip_protocol.as_deref(),
            from: $r.from_port,
            to: $r.to_port,
            source_name: $r.source_security_group_name.as_deref(),
        }
    };
}

/// The rules an Authorize or Revoke call names: its `IpPermissions` or its flat members.
fn requested_rules(
    snap: &Snapshot,
    group: &SgRecord,
    egress: bool,
    perms: Option<&Vec<ec2::IpPermission>>,
    flat: FlatRule<'_>,
) -> Result<Vec<SgRule>, EcsError> {
    let FlatRule {
        cidr_ip,
        ip_protocol,
        from,
        to,
        source_name,
    } = flat;
    let mut perms: Vec<ec2::IpPermission> = perms.cloned().unwrap_or_default();
    if ip_protocol.is_some() || cidr_ip.is_some() || source_name.is_some() {
        let mut p = ec2::IpPermission {
            ip_protocol: Some(ip_protocol.unwrap_or("-1").to_string()),
            from_port: from,
            to_port: to,
            ..Default::default()
        };
        if let Some(c) = cidr_ip {
            p.ip_ranges = Some(vec![ec2::IpRange {
                cidr_ip: Some(c.to_string()),
                ..Default::default()
            }]);
        }
        if let Some(name) = source_name {
            let vpc = group.group.vpc_id.clone().unwrap_or_default();
            let (_, src) = snap.sg_by_name(&vpc, name).ok_or_else(|| {
                err(
                    ErrorKind::InvalidGroupNotFound,
                    format!("The security group '{name}' does not exist in VPC '{vpc}'"),
                )
            })?;
            p.user_id_group_pairs = Some(vec![ec2::UserIdGroupPair {
                group_id: src.group.group_id.clone(),
                ..Default::default()
            }]);
        }
        perms.push(p);
    }
    if perms.is_empty() {
        return Err(err(
            ErrorKind::MissingParameter,
            "No IpPermissions were given: give IpPermissions, or IpProtocol with CidrIp or SourceSecurityGroupName",
        ));
    }
    let mut rules = Vec::new();
    for p in perms {
        let proto = protocol(p.ip_protocol.as_deref().unwrap_or_default())?;
        let (from, to) = match proto.as_str() {
            "-1" => (-1, -1),
            "icmp" => (p.from_port.unwrap_or(-1), p.to_port.unwrap_or(-1)),
            _ => {
                let (Some(f), Some(t)) = (p.from_port, p.to_port) else {
                    return Err(err(
                        ErrorKind::InvalidParameterValue,
                        format!("Invalid value 'Must specify both from and to ports with TCP/UDP.' for portRange. Protocol {proto} needs FromPort and ToPort"),
                    ));
                };
                if !(0..=65535).contains(&f) || !(0..=65535).contains(&t) || f > t {
                    return Err(invalid(format!(
                        "Invalid value 'Invalid port range {f}-{t}' for portRange. Ports must be between 0 and 65535, the first no greater than the last"
                    )));
                }
                (f, t)
            }
        };
        if p.ipv6_ranges.as_ref().is_some_and(|r| !r.is_empty())
            || p.prefix_list_ids.as_ref().is_some_and(|r| !r.is_empty())
        {
            return Err(err(
                ErrorKind::UnsupportedOperation,
                "IPv6 ranges and prefix lists in security group rules are not supported by Berth (its subnets are IPv4 only)",
            ));
        }
        let mut peers = 0;
        for r in p.ip_ranges.iter().flatten() {
            let c = r.cidr_ip.as_deref().unwrap_or_default();
            let parsed = Cidr::parse(c).or_else(|| {
                // EC2 takes a host address's block too (`10.0.0.5/16` is 10.0.0.0/16).
                let (a, n) = c.split_once('/')?;
                let a: Ipv4Addr = a.parse().ok()?;
                let n: u8 = n.parse().ok().filter(|n| *n <= 32)?;
                let mask = if n == 0 { 0 } else { u32::MAX << (32 - n) };
                Cidr::parse(&format!("{}/{n}", Ipv4Addr::from(u32::from(a) & mask)))
            });
            let Some(parsed) = parsed else {
                return Err(invalid(format!(
                    "Value ({c}) for parameter cidrIp is invalid. This is not a valid CIDR block."
                )));
            };
            peers += 1;
            rules.push(SgRule {
                id: String::new(),
                egress,
                protocol: proto.clone(),
                from,
                to,
                cidr: Some(parsed.to_string()),
                group: None,
                description: r.description.clone(),
            });
        }
        for pair in p.user_id_group_pairs.iter().flatten() {
            let vpc = group.group.vpc_id.clone().unwrap_or_default();
            let id = match (&pair.group_id, &pair.group_name) {
                (Some(id), _) => snap.sg(id)?.1.group.group_id.clone().unwrap_or_default(),
                (None, Some(name)) => snap
                    .sg_by_name(&vpc, name)
                    .and_then(|(_, g)| g.group.group_id.clone())
                    .ok_or_else(|| {
                        err(
                            ErrorKind::InvalidGroupNotFound,
                            format!("The security group '{name}' does not exist in VPC '{vpc}'"),
                        )
                    })?,
                (None, None) => {
                    return Err(err(
                        ErrorKind::MissingParameter,
                        "A UserIdGroupPair needs a GroupId or a GroupName",
                    ))
                }
            };
            peers += 1;
            rules.push(SgRule {
                id: String::new(),
                egress,
                protocol: proto.clone(),
                from,
                to,
                cidr: None,
                group: Some(id),
                description: pair.description.clone(),
            });
        }
        if peers == 0 {
            return Err(err(
                ErrorKind::MissingParameter,
                "Each IpPermission needs an IpRanges CidrIp or a UserIdGroupPairs group",
            ));
        }
    }
    Ok(rules)
}

/// The group's wire shape with its permissions from its rules.
fn group_view(rec: &SgRecord) -> ec2::SecurityGroup {
    let perms = |egress: bool| -> Vec<ec2::IpPermission> {
        // One permission per protocol and ports, with its ranges and groups.
        let mut out: Vec<ec2::IpPermission> = Vec::new();
        for r in rec.rules.iter().filter(|r| r.egress == egress) {
            let idx = out.iter().position(|p| {
                p.ip_protocol.as_deref() == Some(r.protocol.as_str())
                    && p.from_port == port_out(r, r.from)
                    && p.to_port == port_out(r, r.to)
            });
            let p = match idx {
                Some(i) => &mut out[i],
                None => {
                    out.push(ec2::IpPermission {
                        ip_protocol: Some(r.protocol.clone()),
                        from_port: port_out(r, r.from),
                        to_port: port_out(r, r.to),
                        ip_ranges: Some(Vec::new()),
                        ipv6_ranges: Some(Vec::new()),
                        prefix_list_ids: Some(Vec::new()),
                        user_id_group_pairs: Some(Vec::new()),
                    });
                    out.last_mut().expect("just pushed")
                }
            };
            if let Some(c) = &r.cidr {
                p.ip_ranges.get_or_insert_with(Vec::new).push(ec2::IpRange {
                    cidr_ip: Some(c.clone()),
                    description: r.description.clone(),
                });
            }
            if let Some(g) = &r.group {
                p.user_id_group_pairs
                    .get_or_insert_with(Vec::new)
                    .push(ec2::UserIdGroupPair {
                        group_id: Some(g.clone()),
                        user_id: rec.group.owner_id.clone(),
                        description: r.description.clone(),
                        ..Default::default()
                    });
            }
        }
        out
    };
    ec2::SecurityGroup {
        ip_permissions: Some(perms(false)),
        ip_permissions_egress: Some(perms(true)),
        ..rec.group.clone()
    }
}

/// EC2 shows no ports for the all-protocol rule.
fn port_out(r: &SgRule, p: i32) -> Option<i32> {
    (r.protocol != "-1").then_some(p)
}

fn rule_view(rec: &SgRecord, r: &SgRule) -> ec2::SecurityGroupRule {
    ec2::SecurityGroupRule {
        security_group_rule_id: Some(r.id.clone()),
        group_id: rec.group.group_id.clone(),
        group_owner_id: rec.group.owner_id.clone(),
        is_egress: Some(r.egress),
        ip_protocol: Some(r.protocol.clone()),
        from_port: Some(r.from),
        to_port: Some(r.to),
        cidr_ipv4: r.cidr.clone(),
        referenced_group_info: r.group.as_ref().map(|g| ec2::ReferencedSecurityGroup {
            group_id: Some(g.clone()),
            user_id: rec.group.owner_id.clone(),
            ..Default::default()
        }),
        description: r.description.clone(),
        tags: Some(Vec::new()),
        ..Default::default()
    }
}

impl Control {
    /// EC2's VPC API: one match over the request.
    pub async fn handle_ec2(&self, caller: &Caller, req: Ec2Request) -> Result<Value, EcsError> {
        if let Some(instance) = &caller.instance {
            return Err(err(
                ErrorKind::AccessDenied,
                format!("the key of the agent of {instance} may only speak the agent protocol"),
            ));
        }
        if dry_run(&req) {
            // Every key may do everything: the request would have succeeded.
            return Err(err(
                ErrorKind::DryRunOperation,
                "Request would have succeeded, but DryRun flag is set.",
            ));
        }
        let _one_writer = self.ec2_lock.lock().await;
        self.ensure_default_vpc().await?;
        let snap = self.ec2_snapshot().await?;
        let answer = match req {
            Ec2Request::CreateVpc(r) => self.create_vpc(&snap, r).await,
            Ec2Request::DescribeVpcs(r) => self.describe_vpcs(&snap, r),
            Ec2Request::DeleteVpc(r) => self.delete_vpc(&snap, r).await,
            Ec2Request::ModifyVpcAttribute(r) => self.modify_vpc_attribute(&snap, r).await,
            Ec2Request::DescribeVpcAttribute(r) => describe_vpc_attribute(&snap, r),
            Ec2Request::CreateSubnet(r) => self.create_subnet(&snap, r).await,
            Ec2Request::DescribeSubnets(r) => describe_subnets(&snap, r),
            Ec2Request::DeleteSubnet(r) => self.delete_subnet(&snap, r).await,
            Ec2Request::CreateSecurityGroup(r) => self.create_security_group(&snap, r).await,
            Ec2Request::DescribeSecurityGroups(r) => describe_security_groups(&snap, r),
            Ec2Request::DeleteSecurityGroup(r) => self.delete_security_group(&snap, r).await,
            Ec2Request::AuthorizeSecurityGroupIngress(r) => {
                let id = self.sg_of(&snap, r.group_id.as_deref(), r.group_name.as_deref())?;
                let flat = flat_rule!(r);
                self.authorize(&snap, &id, false, r.ip_permissions.as_ref(), flat)
                    .await
                    .and_then(|rules| {
                        out(ec2::AuthorizeSecurityGroupIngressResult {
                            r#return: Some(true),
                            security_group_rules: Some(rules),
                        })
                    })
            }
            Ec2Request::AuthorizeSecurityGroupEgress(r) => {
                let id = self.sg_of(&snap, r.group_id.as_deref(), None)?;
                let flat = flat_rule!(r);
                self.authorize(&snap, &id, true, r.ip_permissions.as_ref(), flat)
                    .await
                    .and_then(|rules| {
                        out(ec2::AuthorizeSecurityGroupEgressResult {
                            r#return: Some(true),
                            security_group_rules: Some(rules),
                        })
                    })
            }
            Ec2Request::RevokeSecurityGroupIngress(r) => {
                let id = self.sg_of(&snap, r.group_id.as_deref(), r.group_name.as_deref())?;
                let flat = flat_rule!(r);
                let (revoked, unknown) = self
                    .revoke(
                        &snap,
                        &id,
                        false,
                        r.ip_permissions.as_ref(),
                        r.security_group_rule_ids.as_deref(),
                        flat,
                    )
                    .await?;
                out(ec2::RevokeSecurityGroupIngressResult {
                    r#return: Some(true),
                    revoked_security_group_rules: Some(revoked),
                    unknown_ip_permissions: unknown,
                })
            }
            Ec2Request::RevokeSecurityGroupEgress(r) => {
                let id = self.sg_of(&snap, r.group_id.as_deref(), None)?;
                let flat = flat_rule!(r);
                let (revoked, unknown) = self
                    .revoke(
                        &snap,
                        &id,
                        true,
                        r.ip_permissions.as_ref(),
                        r.security_group_rule_ids.as_deref(),
                        flat,
                    )
                    .await?;
                out(ec2::RevokeSecurityGroupEgressResult {
                    r#return: Some(true),
                    revoked_security_group_rules: Some(revoked),
                    unknown_ip_permissions: unknown,
                })
            }
            Ec2Request::DescribeSecurityGroupRules(r) => describe_security_group_rules(&snap, r),
            Ec2Request::DescribeAvailabilityZones(r) => self.describe_availability_zones(r),
            Ec2Request::DescribeNetworkInterfaces(r) => describe_network_interfaces(&snap, r),
            Ec2Request::CreateTags(r) => {
                let tags = r.tags.clone().unwrap_or_default();
                check_tags(&tags)?;
                self.ec2_retag(&snap, r.resources.as_deref().unwrap_or_default(), |t| {
                    merge_tags(t, &tags)
                })
                .await
                .and_then(|_| out(serde_json::Map::new()))
            }
            Ec2Request::DeleteTags(r) => {
                let drop = r.tags.clone().unwrap_or_default();
                self.ec2_retag(&snap, r.resources.as_deref().unwrap_or_default(), |t| {
                    if drop.is_empty() {
                        t.clear();
                    }
                    t.retain(|x| {
                        !drop
                            .iter()
                            .any(|d| d.key == x.key && (d.value.is_none() || d.value == x.value))
                    })
                })
                .await
                .and_then(|_| out(serde_json::Map::new()))
            }
            Ec2Request::DescribeTags(r) => describe_tags(&snap, r),
        };
        let answer = answer?;
        Ok(answer)
    }

    pub(crate) async fn ec2_snapshot(&self) -> Result<Snapshot, EcsError> {
        let kvs = self
            .store
            .range(keys::EC2, None, None)
            .await
            .map_err(store_error)?;
        let mut s = Snapshot::default();
        for kv in kvs {
            if kv.key.starts_with(keys::EC2_VPCS) {
                let r = decode(&kv)?;
                s.vpcs.push((kv, r));
            } else if kv.key.starts_with(keys::EC2_SUBNETS) {
                let r = decode(&kv)?;
                s.subnets.push((kv, r));
            } else if kv.key.starts_with(keys::EC2_SGS) {
                let r = decode(&kv)?;
                s.sgs.push((kv, r));
            } else if kv.key.starts_with(keys::EC2_ENIS) {
                let r = decode(&kv)?;
                s.enis.push((kv, r));
            } else if let Some(rest) = kv.key.strip_prefix(keys::EC2_IPS) {
                s.ips.insert(rest.to_string());
            } else if let Some(rest) = kv.key.strip_prefix(keys::EC2_PUBLIC_IPS) {
                s.public_ips.insert(rest.to_string());
            }
        }
        Ok(s)
    }

    async fn commit_ec2(&self, txn: Txn) -> Result<(), EcsError> {
        if self.commit(txn).await? {
            Ok(())
        } else {
            Err(err(
                ErrorKind::Server,
                "the VPC configuration changed meanwhile; try again",
            ))
        }
    }

    fn ec2_arn(&self, resource: &str) -> String {
        format!(
            "arn:aws:ec2:{}:{}:{resource}",
            self.config.region, self.config.account_id
        )
    }

    /// Creates the default VPC, its subnets and security group, unless it was made before.
    pub(crate) async fn ensure_default_vpc(&self) -> Result<(), EcsError> {
        if self
            .store
            .get(keys::EC2_DEFAULT_VPC)
            .await
            .map_err(store_error)?
            .is_some()
        {
            return Ok(());
        }
        let vpc_id = new_id("vpc");
        let cidr = Cidr::parse("172.31.0.0/16").expect("a valid block");
        let mut txn = Txn::new()
            .unchanged(keys::EC2_DEFAULT_VPC, None)
            .put(keys::EC2_DEFAULT_VPC, vpc_id.clone().into_bytes());
        let (vpc, sg) = self.new_vpc(&vpc_id, cidr, true, Vec::new());
        txn = txn.put(keys::ec2_vpc(&vpc_id), encode(&vpc)?).put(
            keys::ec2_sg(sg.group.group_id.as_deref().unwrap_or_default()),
            encode(&sg)?,
        );
        for (i, (zone, zone_id)) in zones(&self.config.region).into_iter().enumerate() {
            let block = Cidr::parse(&format!("172.31.{}.0/20", i * 16)).expect("a valid block");
            let mut s = self.new_subnet(&vpc_id, block, &zone, &zone_id, Vec::new());
            s.default_for_az = Some(true);
            s.map_public_ip_on_launch = Some(true);
            txn = txn.put(
                keys::ec2_subnet(s.subnet_id.as_deref().unwrap_or_default()),
                encode(&s)?,
            );
        }
        // Another server (or request) may have made it first: that one stands.
        self.commit(txn).await?;
        Ok(())
    }

    /// A new VPC record and its default security group.
    fn new_vpc(
        &self,
        id: &str,
        cidr: Cidr,
        is_default: bool,
        tags: Vec<ec2::Tag>,
    ) -> (VpcRecord, SgRecord) {
        let owner = self.config.account_id.clone();
        let vpc = ec2::Vpc {
            vpc_id: Some(id.to_string()),
            cidr_block: Some(cidr.to_string()),
            cidr_block_association_set: Some(vec![ec2::VpcCidrBlockAssociation {
                association_id: Some(new_id("vpc-cidr-assoc")),
                cidr_block: Some(cidr.to_string()),
                cidr_block_state: Some(ec2::VpcCidrBlockState {
                    state: Some("associated".into()),
                    ..Default::default()
                }),
            }]),
            ipv6_cidr_block_association_set: Some(Vec::new()),
            dhcp_options_id: Some("default".into()),
            instance_tenancy: Some("default".into()),
            is_default: Some(is_default),
            owner_id: Some(owner.clone()),
            state: Some("available".into()),
            tags: Some(tags),
            ..Default::default()
        };
        let sg_id = new_id("sg");
        let sg = SgRecord {
            group: ec2::SecurityGroup {
                group_id: Some(sg_id.clone()),
                group_name: Some("default".into()),
                description: Some("default VPC security group".into()),
                vpc_id: Some(id.to_string()),
                owner_id: Some(owner),
                security_group_arn: Some(self.ec2_arn(&format!("security-group/{sg_id}"))),
                tags: Some(Vec::new()),
                ..Default::default()
            },
            rules: vec![
                SgRule {
                    id: new_id("sgr"),
                    egress: false,
                    protocol: "-1".into(),
                    from: -1,
                    to: -1,
                    cidr: None,
                    group: Some(sg_id.clone()),
                    description: None,
                },
                all_out(),
            ],
        };
        (
            VpcRecord {
                vpc,
                dns_support: true,
                dns_hostnames: is_default,
            },
            sg,
        )
    }

    fn new_subnet(
        &self,
        vpc_id: &str,
        cidr: Cidr,
        zone: &str,
        zone_id: &str,
        tags: Vec<ec2::Tag>,
    ) -> ec2::Subnet {
        let id = new_id("subnet");
        ec2::Subnet {
            subnet_id: Some(id.clone()),
            subnet_arn: Some(self.ec2_arn(&format!("subnet/{id}"))),
            vpc_id: Some(vpc_id.to_string()),
            cidr_block: Some(cidr.to_string()),
            availability_zone: Some(zone.to_string()),
            availability_zone_id: Some(zone_id.to_string()),
            available_ip_address_count: Some(cidr.assignable_count() as i32),
            default_for_az: Some(false),
            map_public_ip_on_launch: Some(false),
            assign_ipv6_address_on_creation: Some(false),
            ipv6_cidr_block_association_set: Some(Vec::new()),
            ipv6_native: Some(false),
            map_customer_owned_ip_on_launch: Some(false),
            enable_dns64: Some(false),
            owner_id: Some(self.config.account_id.clone()),
            state: Some("available".into()),
            tags: Some(tags),
            ..Default::default()
        }
    }

    async fn create_vpc(
        &self,
        _snap: &Snapshot,
        r: ec2::CreateVpcRequest,
    ) -> Result<Value, EcsError> {
        if r.ipv4_ipam_pool_id.is_some()
            || r.amazon_provided_ipv6_cidr_block == Some(true)
            || r.ipv6_cidr_block.is_some()
            || r.ipv6_ipam_pool_id.is_some()
        {
            return Err(err(
                ErrorKind::UnsupportedOperation,
                "IPAM pools and IPv6 blocks are not supported by Berth: give CidrBlock",
            ));
        }
        if r.instance_tenancy
            .as_deref()
            .is_some_and(|t| t != "default")
        {
            return Err(err(
                ErrorKind::UnsupportedOperation,
                "Only the default instance tenancy is supported by Berth",
            ));
        }
        let Some(block) = r.cidr_block.as_deref() else {
            return Err(err(
                ErrorKind::MissingParameter,
                "Either 'cidrBlock' or 'ipv4IpamPoolId' should be provided.",
            ));
        };
        let cidr = Cidr::parse(block)
            .ok_or_else(|| invalid(format!("Value ({block}) for parameter cidrBlock is invalid. This is not a valid CIDR block.")))?;
        if !(16..=28).contains(&cidr.prefix()) {
            return Err(err(
                ErrorKind::InvalidVpcRange,
                format!("The CIDR '{block}' is invalid."),
            ));
        }
        let tags = tags_for(&r.tag_specifications, "vpc")?;
        let id = new_id("vpc");
        let (vpc, sg) = self.new_vpc(&id, cidr, false, tags);
        let key = keys::ec2_vpc(&id);
        let sg_key = keys::ec2_sg(sg.group.group_id.as_deref().unwrap_or_default());
        self.commit_ec2(
            Txn::new()
                .unchanged(&key, None)
                .put(key, encode(&vpc)?)
                .put(sg_key, encode(&sg)?),
        )
        .await?;
        out(ec2::CreateVpcResult { vpc: Some(vpc.vpc) })
    }

    fn describe_vpcs(
        &self,
        snap: &Snapshot,
        r: ec2::DescribeVpcsRequest,
    ) -> Result<Value, EcsError> {
        let ids = r.vpc_ids.clone().unwrap_or_default();
        for id in &ids {
            snap.vpc(id)?;
        }
        let filters = r.filters.clone().unwrap_or_default();
        let mut vpcs = Vec::new();
        for (_, v) in &snap.vpcs {
            let vpc = &v.vpc;
            let id = vpc.vpc_id.clone().unwrap_or_default();
            if !ids.is_empty() && !ids.contains(&id) {
                continue;
            }
            let fields = [
                ("vpc-id", vec![id.clone()]),
                ("cidr", vec![vpc.cidr_block.clone().unwrap_or_default()]),
                (
                    "cidr-block-association.cidr-block",
                    vec![vpc.cidr_block.clone().unwrap_or_default()],
                ),
                (
                    "is-default",
                    vec![vpc.is_default.unwrap_or(false).to_string()],
                ),
                ("state", vec!["available".into()]),
                ("owner-id", vec![self.config.account_id.clone()]),
                ("dhcp-options-id", vec!["default".into()]),
            ];
            let known: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
            if filtered(
                &filters,
                &known,
                &fields,
                vpc.tags.as_deref().unwrap_or_default(),
            )? {
                vpcs.push(vpc.clone());
            }
        }
        let (vpcs, next) = page(
            vpcs,
            |v| v.vpc_id.clone(),
            r.max_results,
            r.next_token.as_deref(),
        )?;
        out(ec2::DescribeVpcsResult {
            vpcs: Some(vpcs),
            next_token: next,
        })
    }

    async fn delete_vpc(
        &self,
        snap: &Snapshot,
        r: ec2::DeleteVpcRequest,
    ) -> Result<Value, EcsError> {
        let id = r.vpc_id.unwrap_or_default();
        let (kv, rec) = snap.vpc(&id)?;
        let dependent = snap
            .subnets
            .iter()
            .any(|(_, s)| s.vpc_id.as_deref() == Some(id.as_str()))
            || snap.sgs.iter().any(|(_, g)| {
                g.group.vpc_id.as_deref() == Some(id.as_str())
                    && g.group.group_name.as_deref() != Some("default")
            });
        if dependent {
            return Err(err(
                ErrorKind::DependencyViolation,
                format!("The vpc '{id}' has dependencies and cannot be deleted."),
            ));
        }
        let mut txn = Txn::new()
            .unchanged(&kv.key, Some(kv))
            .delete(kv.key.clone());
        for (gkv, _) in snap
            .sgs
            .iter()
            .filter(|(_, g)| g.group.vpc_id.as_deref() == Some(id.as_str()))
        {
            txn = txn.unchanged(&gkv.key, Some(gkv)).delete(gkv.key.clone());
        }
        let _ = rec;
        self.commit_ec2(txn).await?;
        out(serde_json::Map::new())
    }

    async fn modify_vpc_attribute(
        &self,
        snap: &Snapshot,
        r: ec2::ModifyVpcAttributeRequest,
    ) -> Result<Value, EcsError> {
        let id = r.vpc_id.clone().unwrap_or_default();
        let (kv, rec) = snap.vpc(&id)?;
        let given = [
            r.enable_dns_support.is_some(),
            r.enable_dns_hostnames.is_some(),
            r.enable_network_address_usage_metrics.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(err(
                ErrorKind::InvalidParameterCombination,
                "Fields for multiple attribute types specified: give exactly one attribute",
            ));
        }
        if r.enable_network_address_usage_metrics.is_some() {
            return Err(err(
                ErrorKind::UnsupportedOperation,
                "Network address usage metrics are not supported by Berth",
            ));
        }
        let mut rec = rec.clone();
        if let Some(v) = r.enable_dns_support.and_then(|v| v.value) {
            rec.dns_support = v;
        }
        if let Some(v) = r.enable_dns_hostnames.and_then(|v| v.value) {
            if v && !rec.dns_support {
                return Err(err(
                    ErrorKind::InvalidParameterValue,
                    "DNS hostnames need DNS support: enable enableDnsSupport first",
                ));
            }
            rec.dns_hostnames = v;
        }
        self.commit_ec2(Txn::new().replace(kv, encode(&rec)?))
            .await?;
        out(serde_json::Map::new())
    }

    async fn create_subnet(
        &self,
        snap: &Snapshot,
        r: ec2::CreateSubnetRequest,
    ) -> Result<Value, EcsError> {
        if r.ipv6_cidr_block.is_some()
            || r.ipv6_native == Some(true)
            || r.ipv4_ipam_pool_id.is_some()
            || r.ipv6_ipam_pool_id.is_some()
            || r.outpost_arn.is_some()
        {
            return Err(err(
                ErrorKind::UnsupportedOperation,
                "IPv6, IPAM pools and Outposts are not supported by Berth's subnets: give CidrBlock",
            ));
        }
        let vpc_id = r.vpc_id.clone().unwrap_or_default();
        let (_, vpc) = snap.vpc(&vpc_id)?;
        let Some(block) = r.cidr_block.as_deref() else {
            return Err(err(
                ErrorKind::MissingParameter,
                "Either 'cidrBlock' or 'ipv4IpamPoolId' should be provided.",
            ));
        };
        let cidr = Cidr::parse(block).ok_or_else(|| {
            invalid(format!(
                "Value ({block}) for parameter cidrBlock is invalid. This is not a valid CIDR block."
            ))
        })?;
        let vpc_cidr = vpc
            .vpc
            .cidr_block
            .as_deref()
            .and_then(Cidr::parse)
            .ok_or_else(|| EcsError::server(format!("VPC {vpc_id} has no readable block")))?;
        if !(16..=28).contains(&cidr.prefix()) || !vpc_cidr.contains(&cidr) {
            return Err(err(
                ErrorKind::InvalidSubnetRange,
                format!("The CIDR '{block}' is invalid."),
            ));
        }
        for (_, s) in snap
            .subnets
            .iter()
            .filter(|(_, s)| s.vpc_id.as_deref() == Some(vpc_id.as_str()))
        {
            if s.cidr_block
                .as_deref()
                .and_then(Cidr::parse)
                .is_some_and(|c| c.overlaps(&cidr))
            {
                return Err(err(
                    ErrorKind::InvalidSubnetConflict,
                    format!("The CIDR '{block}' conflicts with another subnet"),
                ));
            }
        }
        let zones = zones(&self.config.region);
        let zone = match (
            r.availability_zone.as_deref(),
            r.availability_zone_id.as_deref(),
        ) {
            (Some(_), Some(_)) => {
                return Err(err(
                    ErrorKind::InvalidParameterCombination,
                    "Only one of availabilityZone and availabilityZoneId may be given",
                ))
            }
            (Some(name), None) => zones.iter().find(|(z, _)| z == name),
            (None, Some(id)) => zones.iter().find(|(_, z)| z == id),
            // EC2 picks a zone: the one with the fewest of the VPC's subnets.
            (None, None) => zones.iter().min_by_key(|(z, _)| {
                snap.subnets
                    .iter()
                    .filter(|(_, s)| {
                        s.vpc_id.as_deref() == Some(vpc_id.as_str())
                            && s.availability_zone.as_deref() == Some(z.as_str())
                    })
                    .count()
            }),
        };
        let Some((zone, zone_id)) = zone else {
            let given = r
                .availability_zone
                .clone()
                .or(r.availability_zone_id.clone())
                .unwrap_or_default();
            let names: Vec<&str> = zones.iter().map(|(z, _)| z.as_str()).collect();
            return Err(invalid(format!(
                "Value ({given}) for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: {}.",
                names.join(", ")
            )));
        };
        let tags = tags_for(&r.tag_specifications, "subnet")?;
        let s = self.new_subnet(&vpc_id, cidr, zone, zone_id, tags);
        let key = keys::ec2_subnet(s.subnet_id.as_deref().unwrap_or_default());
        // Guarded on the VPC and every subnet of it read, so two overlapping creates cannot
        // both land.
        let mut txn = Txn::new().unchanged(&key, None);
        let (vkv, _) = snap.vpc(&vpc_id)?;
        txn = txn.unchanged(&vkv.key, Some(vkv));
        for (skv, _) in snap
            .subnets
            .iter()
            .filter(|(_, s)| s.vpc_id.as_deref() == Some(vpc_id.as_str()))
        {
            txn = txn.unchanged(&skv.key, Some(skv));
        }
        self.commit_ec2(txn.put(key, encode(&s)?)).await?;
        out(ec2::CreateSubnetResult { subnet: Some(s) })
    }

    async fn delete_subnet(
        &self,
        snap: &Snapshot,
        r: ec2::DeleteSubnetRequest,
    ) -> Result<Value, EcsError> {
        let id = r.subnet_id.unwrap_or_default();
        let (kv, _) = snap.subnet(&id)?;
        if snap.enis.iter().any(|(_, e)| e.subnet_id == id) || snap.used(&id) > 0 {
            return Err(err(
                ErrorKind::DependencyViolation,
                format!("The subnet '{id}' has dependencies and cannot be deleted."),
            ));
        }
        self.commit_ec2(
            Txn::new()
                .unchanged(&kv.key, Some(kv))
                .delete(kv.key.clone()),
        )
        .await?;
        out(serde_json::Map::new())
    }

    async fn create_security_group(
        &self,
        snap: &Snapshot,
        r: ec2::CreateSecurityGroupRequest,
    ) -> Result<Value, EcsError> {
        let name = r.group_name.clone().unwrap_or_default();
        let description = r.description.clone().unwrap_or_default();
        if name.is_empty() || name.len() > 255 || !name.is_ascii() {
            return Err(invalid(format!(
                "Invalid value '{name}' for groupName. Length must be 1-255 ASCII characters"
            )));
        }
        if name.to_ascii_lowercase().starts_with("sg-") {
            return Err(invalid(format!(
                "Invalid value '{name}' for groupName. Group names may not be in the format sg-*."
            )));
        }
        if description.len() > 255 || !description.is_ascii() {
            return Err(invalid(
                "Invalid value for GroupDescription: at most 255 ASCII characters",
            ));
        }
        let vpc_id = match r.vpc_id.clone() {
            Some(v) => v,
            None => snap
                .default_vpc()
                .and_then(|v| v.vpc.vpc_id.clone())
                .ok_or_else(|| {
                    err(
                        ErrorKind::MissingParameter,
                        "No default VPC for this user: give VpcId",
                    )
                })?,
        };
        let (vkv, _) = snap.vpc(&vpc_id)?;
        if snap.sg_by_name(&vpc_id, &name).is_some() {
            return Err(err(
                ErrorKind::InvalidGroupDuplicate,
                format!("The security group '{name}' already exists for VPC '{vpc_id}'"),
            ));
        }
        let tags = tags_for(&r.tag_specifications, "security-group")?;
        let id = new_id("sg");
        let rec = SgRecord {
            group: ec2::SecurityGroup {
                group_id: Some(id.clone()),
                group_name: Some(name.clone()),
                description: Some(description),
                vpc_id: Some(vpc_id.clone()),
                owner_id: Some(self.config.account_id.clone()),
                security_group_arn: Some(self.ec2_arn(&format!("security-group/{id}"))),
                tags: Some(tags.clone()),
                ..Default::default()
            },
            rules: vec![all_out()],
        };
        let key = keys::ec2_sg(&id);
        let mut txn = Txn::new()
            .unchanged(&key, None)
            .unchanged(&vkv.key, Some(vkv));
        // Names are unique per VPC: guard on the groups of the VPC read.
        for (gkv, _) in snap
            .sgs
            .iter()
            .filter(|(_, g)| g.group.vpc_id.as_deref() == Some(vpc_id.as_str()))
        {
            txn = txn.unchanged(&gkv.key, Some(gkv));
        }
        self.commit_ec2(txn.put(key, encode(&rec)?)).await?;
        out(ec2::CreateSecurityGroupResult {
            group_id: Some(id.clone()),
            security_group_arn: rec.group.security_group_arn.clone(),
            tags: Some(tags),
        })
    }

    /// The group a request names by id or (in the default VPC) by name.
    fn sg_of(
        &self,
        snap: &Snapshot,
        id: Option<&str>,
        name: Option<&str>,
    ) -> Result<String, EcsError> {
        match (id, name) {
            (Some(id), _) => Ok(snap.sg(id)?.1.group.group_id.clone().unwrap_or_default()),
            (None, Some(name)) => {
                let vpc = snap
                    .default_vpc()
                    .and_then(|v| v.vpc.vpc_id.clone())
                    .unwrap_or_default();
                snap.sg_by_name(&vpc, name)
                    .and_then(|(_, g)| g.group.group_id.clone())
                    .ok_or_else(|| {
                        err(
                            ErrorKind::InvalidGroupNotFound,
                            format!(
                                "The security group '{name}' does not exist in default VPC '{vpc}'"
                            ),
                        )
                    })
            }
            (None, None) => Err(err(
                ErrorKind::MissingParameter,
                "The request must contain the parameter groupId or groupName",
            )),
        }
    }

    async fn delete_security_group(
        &self,
        snap: &Snapshot,
        r: ec2::DeleteSecurityGroupRequest,
    ) -> Result<Value, EcsError> {
        let id = self.sg_of(snap, r.group_id.as_deref(), r.group_name.as_deref())?;
        let (kv, rec) = snap.sg(&id)?;
        if rec.group.group_name.as_deref() == Some("default") {
            return Err(err(
                ErrorKind::CannotDelete,
                format!(
                    "the specified group: \"{id}\" name: \"default\" cannot be deleted by a user"
                ),
            ));
        }
        let in_use = snap.enis.iter().any(|(_, e)| e.groups.contains(&id));
        let referenced = snap.sgs.iter().any(|(_, g)| {
            g.group.group_id.as_deref() != Some(id.as_str())
                && g.rules
                    .iter()
                    .any(|r| r.group.as_deref() == Some(id.as_str()))
        });
        if in_use || referenced {
            return Err(err(
                ErrorKind::DependencyViolation,
                format!("resource {id} has a dependent object"),
            ));
        }
        self.commit_ec2(
            Txn::new()
                .unchanged(&kv.key, Some(kv))
                .delete(kv.key.clone()),
        )
        .await?;
        self.state.wake_all();
        out(ec2::DeleteSecurityGroupResult {
            r#return: Some(true),
            group_id: Some(id),
        })
    }

    async fn authorize(
        &self,
        snap: &Snapshot,
        id: &str,
        egress: bool,
        perms: Option<&Vec<ec2::IpPermission>>,
        flat: FlatRule<'_>,
    ) -> Result<Vec<ec2::SecurityGroupRule>, EcsError> {
        let (kv, rec) = snap.sg(id)?;
        let mut new = requested_rules(snap, rec, egress, perms, flat)?;
        for r in &new {
            if rec.rules.iter().any(|x| x.same(r)) {
                let peer = r.cidr.clone().or(r.group.clone()).unwrap_or_default();
                return Err(err(
                    ErrorKind::InvalidPermissionDuplicate,
                    format!(
                        "the specified rule \"peer: {peer}, {}, from port: {}, to port: {}, ALLOW\" already exists",
                        r.protocol.to_ascii_uppercase(),
                        r.from,
                        r.to
                    ),
                ));
            }
        }
        if rec.rules.len() + new.len() > 120 {
            return Err(err(
                ErrorKind::LimitExceeded,
                "The maximum number of rules per security group has been reached.",
            ));
        }
        let mut updated = rec.clone();
        for r in &mut new {
            r.id = new_id("sgr");
            updated.rules.push(r.clone());
        }
        // Referenced groups must stay while this rule stands: guard on them.
        let mut txn = Txn::new().replace(kv, encode(&updated)?);
        for g in new.iter().filter_map(|r| r.group.as_deref()) {
            if g != id {
                let (gkv, _) = snap.sg(g)?;
                txn = txn.unchanged(&gkv.key, Some(gkv));
            }
        }
        self.commit_ec2(txn).await?;
        self.state.wake_all();
        Ok(new.iter().map(|r| rule_view(&updated, r)).collect())
    }

    async fn revoke(
        &self,
        snap: &Snapshot,
        id: &str,
        egress: bool,
        perms: Option<&Vec<ec2::IpPermission>>,
        rule_ids: Option<&[String]>,
        flat: FlatRule<'_>,
    ) -> Result<
        (
            Vec<ec2::RevokedSecurityGroupRule>,
            Option<Vec<ec2::IpPermission>>,
        ),
        EcsError,
    > {
        let (kv, rec) = snap.sg(id)?;
        let mut gone: Vec<SgRule> = Vec::new();
        let mut unknown = Vec::new();
        if let Some(ids) = rule_ids.filter(|i| !i.is_empty()) {
            for rid in ids {
                match rec.rules.iter().find(|r| &r.id == rid && r.egress == egress) {
                    Some(r) => gone.push(r.clone()),
                    None => {
                        return Err(err(
                            ErrorKind::InvalidPermissionNotFound,
                            format!("The specified security group rule ID '{rid}' does not exist in this security group."),
                        ))
                    }
                }
            }
        } else {
            for r in requested_rules(snap, rec, egress, perms, flat)? {
                match rec.rules.iter().find(|x| x.same(&r)) {
                    Some(x) => gone.push(x.clone()),
                    None => unknown.push(r),
                }
            }
            if gone.is_empty() {
                return Err(err(
                    ErrorKind::InvalidPermissionNotFound,
                    "The specified rule does not exist in this security group.",
                ));
            }
        }
        let mut updated = rec.clone();
        updated.rules.retain(|r| !gone.iter().any(|g| g.id == r.id));
        self.commit_ec2(Txn::new().replace(kv, encode(&updated)?))
            .await?;
        self.state.wake_all();
        let revoked = gone
            .iter()
            .map(|r| ec2::RevokedSecurityGroupRule {
                security_group_rule_id: Some(r.id.clone()),
                group_id: Some(id.to_string()),
                is_egress: Some(r.egress),
                ip_protocol: Some(r.protocol.clone()),
                from_port: Some(r.from),
                to_port: Some(r.to),
                cidr_ipv4: r.cidr.clone(),
                referenced_group_id: r.group.clone(),
                description: r.description.clone(),
                ..Default::default()
            })
            .collect();
        let unknown = (!unknown.is_empty()).then(|| {
            let view = SgRecord {
                group: rec.group.clone(),
                rules: unknown,
            };
            let v = group_view(&view);
            if egress {
                v.ip_permissions_egress.unwrap_or_default()
            } else {
                v.ip_permissions.unwrap_or_default()
            }
        });
        Ok((revoked, unknown))
    }

    fn describe_availability_zones(
        &self,
        r: ec2::DescribeAvailabilityZonesRequest,
    ) -> Result<Value, EcsError> {
        let names = r.zone_names.clone().unwrap_or_default();
        let ids = r.zone_ids.clone().unwrap_or_default();
        let zones = zones(&self.config.region);
        for n in &names {
            if !zones.iter().any(|(z, _)| z == n) {
                return Err(invalid(format!("The zone '{n}' does not exist.")));
            }
        }
        let filters = r.filters.clone().unwrap_or_default();
        let mut list = Vec::new();
        for (zone, zone_id) in zones {
            if (!names.is_empty() && !names.contains(&zone))
                || (!ids.is_empty() && !ids.contains(&zone_id))
            {
                continue;
            }
            let fields = [
                ("zone-name", vec![zone.clone()]),
                ("zone-id", vec![zone_id.clone()]),
                ("region-name", vec![self.config.region.clone()]),
                ("state", vec!["available".into()]),
                ("zone-type", vec!["availability-zone".into()]),
                ("opt-in-status", vec!["opt-in-not-required".into()]),
                ("group-name", vec![self.config.region.clone()]),
            ];
            let known: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
            if !filtered(&filters, &known, &fields, &[])? {
                continue;
            }
            list.push(ec2::AvailabilityZone {
                zone_name: Some(zone),
                zone_id: Some(zone_id),
                region_name: Some(self.config.region.clone()),
                state: Some("available".into()),
                opt_in_status: Some("opt-in-not-required".into()),
                zone_type: Some("availability-zone".into()),
                group_name: Some(self.config.region.clone()),
                network_border_group: Some(self.config.region.clone()),
                messages: Some(Vec::new()),
                ..Default::default()
            });
        }
        out(ec2::DescribeAvailabilityZonesResult {
            availability_zones: Some(list),
        })
    }

    /// Applies `change` to the tags of each resource (VPCs, subnets, security groups), all in
    /// one transaction; an unknown id refuses the whole call.
    async fn ec2_retag(
        &self,
        snap: &Snapshot,
        resources: &[String],
        change: impl Fn(&mut Vec<ec2::Tag>),
    ) -> Result<(), EcsError> {
        let mut txn = Txn::new();
        for id in resources {
            if id.starts_with("vpc-") {
                let (kv, rec) = snap.vpc(id)?;
                let mut rec = rec.clone();
                change(rec.vpc.tags.get_or_insert_with(Vec::new));
                txn = txn.replace(kv, encode(&rec)?);
            } else if id.starts_with("subnet-") {
                let (kv, s) = snap.subnet(id)?;
                let mut s = s.clone();
                change(s.tags.get_or_insert_with(Vec::new));
                txn = txn.replace(kv, encode(&s)?);
            } else if id.starts_with("sg-") {
                let (kv, rec) = snap.sg(id)?;
                let mut rec = rec.clone();
                change(rec.group.tags.get_or_insert_with(Vec::new));
                txn = txn.replace(kv, encode(&rec)?);
            } else {
                return Err(err(
                    ErrorKind::InvalidIdMalformed,
                    format!(
                        "The ID '{id}' is not valid (Berth tags VPCs, subnets and security groups)"
                    ),
                ));
            }
        }
        self.commit_ec2(txn).await
    }

    /// Resolves an `awsvpcConfiguration` for a task: its subnets (in the same VPC), security
    /// groups (the VPC's default group when none is given) and public address. In `--dev` mode
    /// unknown subnet and group ids are created in the default VPC on first use.
    pub(crate) async fn resolve_awsvpc(
        &self,
        c: &berth_api::ecs::AwsVpcConfiguration,
    ) -> Result<Awsvpc, EcsError> {
        let subnets = c.subnets.clone().unwrap_or_default();
        let groups = c.security_groups.clone().unwrap_or_default();
        if subnets.is_empty() {
            return Err(EcsError::invalid("subnets can not be empty."));
        }
        if subnets.len() > 16 {
            return Err(EcsError::invalid("subnets can have at most 16 items."));
        }
        if groups.len() > 5 {
            return Err(EcsError::invalid(
                "securityGroups can have at most 5 items.",
            ));
        }
        let public = match c.assign_public_ip.as_deref() {
            None | Some("DISABLED") => false,
            Some("ENABLED") => true,
            Some(other) => {
                return Err(EcsError::invalid(format!(
                    "assignPublicIp '{other}' must be ENABLED or DISABLED"
                )))
            }
        };
        let _one_writer = self.ec2_lock.lock().await;
        self.ensure_default_vpc().await?;
        let mut snap = self.ec2_snapshot().await?;
        if self.config.dev && self.create_made_up(&snap, &subnets, &groups).await? {
            snap = self.ec2_snapshot().await?;
        }
        let mut vpc = None;
        let mut chosen = Vec::new();
        for id in &subnets {
            let (_, s) = snap.subnet(id).map_err(|_| {
                EcsError::invalid(format!(
                    "Error retrieving subnet information for [{id}]: The subnet ID '{id}' does not exist (Service: AmazonEC2; Status Code: 400; Error Code: InvalidSubnetID.NotFound)"
                ))
            })?;
            let v = s.vpc_id.clone().unwrap_or_default();
            if vpc.as_ref().is_some_and(|x| *x != v) {
                return Err(EcsError::invalid(
                    "The subnets must all belong to the same VPC.",
                ));
            }
            vpc = Some(v);
            chosen.push(s.clone());
        }
        let vpc = vpc.unwrap_or_default();
        let mut sg_ids = Vec::new();
        for id in &groups {
            let (_, g) = snap.sg(id).map_err(|_| {
                EcsError::invalid(format!(
                    "Error retrieving security group information for [{id}]: The security group '{id}' does not exist (Service: AmazonEC2; Status Code: 400; Error Code: InvalidGroup.NotFound)"
                ))
            })?;
            if g.group.vpc_id.as_deref() != Some(vpc.as_str()) {
                return Err(EcsError::invalid(format!(
                    "Security group {id} does not belong to the VPC of the subnets ({vpc})."
                )));
            }
            if !sg_ids.contains(id) {
                sg_ids.push(id.clone());
            }
        }
        if sg_ids.is_empty() {
            if let Some((_, g)) = snap.sg_by_name(&vpc, "default") {
                sg_ids.push(g.group.group_id.clone().unwrap_or_default());
            }
        }
        Ok(Awsvpc {
            subnets: chosen,
            groups: sg_ids,
            public,
        })
    }

    /// `--dev` only: the subnets and groups a request names that do not exist, created in the
    /// default VPC (subnets in its next free /20s). `true` when something was made.
    async fn create_made_up(
        &self,
        snap: &Snapshot,
        subnets: &[String],
        groups: &[String],
    ) -> Result<bool, EcsError> {
        let Some(vpc) = snap.default_vpc() else {
            return Ok(false);
        };
        let vpc_id = vpc.vpc.vpc_id.clone().unwrap_or_default();
        let taken: Vec<Cidr> = snap
            .subnets
            .iter()
            .filter(|(_, s)| s.vpc_id.as_deref() == Some(vpc_id.as_str()))
            .filter_map(|(_, s)| s.cidr_block.as_deref().and_then(Cidr::parse))
            .collect();
        let mut free = (0..16u32)
            .filter_map(|i| Cidr::parse(&format!("172.31.{}.0/20", i * 16)))
            .filter(|c| !taken.iter().any(|t| t.overlaps(c)));
        let zones = zones(&self.config.region);
        let mut txn = Txn::new();
        let mut made = false;
        for (i, id) in subnets.iter().enumerate() {
            if snap.subnet(id).is_ok() || !id.starts_with("subnet-") {
                continue;
            }
            let Some(block) = free.next() else {
                break;
            };
            let (zone, zone_id) = &zones[i % zones.len()];
            let mut s = self.new_subnet(&vpc_id, block, zone, zone_id, Vec::new());
            s.subnet_id = Some(id.clone());
            s.subnet_arn = Some(self.ec2_arn(&format!("subnet/{id}")));
            let key = keys::ec2_subnet(id);
            txn = txn.unchanged(&key, None).put(key, encode(&s)?);
            made = true;
        }
        for id in groups {
            if snap.sg(id).is_ok() || !id.starts_with("sg-") {
                continue;
            }
            let rec = SgRecord {
                group: ec2::SecurityGroup {
                    group_id: Some(id.clone()),
                    group_name: Some(id.trim_start_matches("sg-").to_string()),
                    description: Some("made on first use by Berth's dev mode".into()),
                    vpc_id: Some(vpc_id.clone()),
                    owner_id: Some(self.config.account_id.clone()),
                    security_group_arn: Some(self.ec2_arn(&format!("security-group/{id}"))),
                    tags: Some(Vec::new()),
                    ..Default::default()
                },
                rules: vec![all_out()],
            };
            let key = keys::ec2_sg(id);
            txn = txn.unchanged(&key, None).put(key, encode(&rec)?);
            made = true;
        }
        if made {
            self.commit_ec2(txn).await?;
        }
        Ok(made)
    }
}

/// The attachment detail names ECS shows for a task's interface.
const DETAIL_SUBNET: &str = "subnetId";
const DETAIL_ENI: &str = "networkInterfaceId";
const DETAIL_MAC: &str = "macAddress";
const DETAIL_DNS: &str = "privateDnsName";
const DETAIL_IP: &str = "privateIPv4Address";
const DETAIL_PUBLIC_IP: &str = "publicIPv4Address";
/// ECS's attachment type for a task's interface.
pub(crate) const ENI_ATTACHMENT: &str = "ElasticNetworkInterface";

impl Control {
    /// Gives the `index`th task of a placement an interface: a subnet of `net` (in turn), the
    /// subnet's first free address, a public address if asked; the records and the guards that
    /// keep two tasks from one address (and the subnet and groups from going meanwhile) are
    /// added to `txn`. `taken` holds the addresses given out so far, this placement's too.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn allocate_eni(
        &self,
        snap: &Snapshot,
        net: &Awsvpc,
        index: usize,
        taken: &mut BTreeSet<String>,
        taken_public: &mut BTreeSet<String>,
        task_arn: &str,
        mut txn: Txn,
    ) -> Result<(EniRecord, Txn), EcsError> {
        // The subnet with the fewest interfaces first (so tasks spread over the subnets, and
        // their zones), in turn from `index` among equals.
        let n = net.subnets.len().max(1);
        let used = |s: &ec2::Subnet| {
            let prefix = format!("{}/", s.subnet_id.as_deref().unwrap_or_default());
            taken.iter().filter(|k| k.starts_with(&prefix)).count()
        };
        let mut order: Vec<usize> = (0..n).map(|k| (index + k) % n).collect();
        order.sort_by_key(|&i| used(&net.subnets[i]));
        for i in order {
            let s = &net.subnets[i];
            let id = s.subnet_id.clone().unwrap_or_default();
            let Some(cidr) = s.cidr_block.as_deref().and_then(Cidr::parse) else {
                continue;
            };
            let Some(ip) = cidr
                .assignable()
                .map(|a| a.to_string())
                .find(|a| !taken.contains(&format!("{id}/{a}")))
            else {
                continue;
            };
            let public_ip = if net.public {
                let p = self
                    .config
                    .public_ips
                    .assignable()
                    .map(|a| a.to_string())
                    .find(|a| !taken_public.contains(a))
                    .ok_or_else(|| {
                        EcsError::client(format!(
                            "No public IPv4 address is free: every address of this server's public pool ({}) is in use",
                            self.config.public_ips
                        ))
                    })?;
                taken_public.insert(p.clone());
                Some(p)
            } else {
                None
            };
            taken.insert(format!("{id}/{ip}"));
            let eni = EniRecord {
                id: new_id("eni"),
                subnet_id: id.clone(),
                vpc_id: s.vpc_id.clone().unwrap_or_default(),
                availability_zone: s.availability_zone.clone().unwrap_or_default(),
                subnet_cidr: cidr.to_string(),
                private_ip: ip.clone(),
                mac: ip.parse().map(mac_for).unwrap_or_default(),
                public_ip,
                groups: net.groups.clone(),
                task_arn: task_arn.to_string(),
                created_at: crate::now_epoch(),
            };
            // Rewritten, not only guarded: a DeleteSubnet or DeleteSecurityGroup that read
            // them before this interface existed then fails its own guard.
            let (skv, _) = snap.subnet(&id)?;
            txn = txn.replace(skv, skv.value.clone());
            for g in &eni.groups {
                let (gkv, _) = snap.sg(g)?;
                txn = txn.replace(gkv, gkv.value.clone());
            }
            let eni_id = eni.id.clone().into_bytes();
            for key in eni.keys() {
                txn = txn.unchanged(&key, None);
                if key == keys::ec2_eni(&eni.id) {
                    txn = txn.put(key, encode(&eni)?);
                } else {
                    txn = txn.put(key, eni_id.clone());
                }
            }
            return Ok((eni, txn));
        }
        Err(EcsError::client(format!(
            "No free IPv4 address in subnets {} (InsufficientFreeAddressesInSubnet)",
            net.subnets
                .iter()
                .filter_map(|s| s.subnet_id.clone())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// Shows interface `eni` on a new task record as ECS does: the task's attachment (PRECREATED
/// until the task runs), each container's interface, and the subnet's zone.
pub(crate) fn attach(t: &mut berth_api::ecs::Task, eni: &EniRecord) {
    use berth_api::ecs::{Attachment, KeyValuePair, NetworkInterface};
    let id = uuid::Uuid::new_v4().to_string();
    let detail = |name: &str, value: &str| KeyValuePair {
        name: Some(name.to_string()),
        value: Some(value.to_string()),
    };
    let mut details = vec![
        detail(DETAIL_SUBNET, &eni.subnet_id),
        detail(DETAIL_ENI, &eni.id),
        detail(DETAIL_MAC, &eni.mac),
        detail(
            DETAIL_DNS,
            &format!("ip-{}.ec2.internal", eni.private_ip.replace('.', "-")),
        ),
        detail(DETAIL_IP, &eni.private_ip),
    ];
    if let Some(p) = &eni.public_ip {
        details.push(detail(DETAIL_PUBLIC_IP, p));
    }
    t.attachments.get_or_insert_with(Vec::new).push(Attachment {
        id: Some(id.clone()),
        r#type: Some(ENI_ATTACHMENT.into()),
        status: Some("PRECREATED".into()),
        details: Some(details),
    });
    for c in t.containers.iter_mut().flatten() {
        c.network_interfaces = Some(vec![NetworkInterface {
            attachment_id: Some(id.clone()),
            private_ipv4_address: Some(eni.private_ip.clone()),
            ..Default::default()
        }]);
    }
}

/// A task's interface attachment, if it has one.
fn eni_attachment(t: &berth_api::ecs::Task) -> Option<&berth_api::ecs::Attachment> {
    t.attachments
        .iter()
        .flatten()
        .find(|a| a.r#type.as_deref() == Some(ENI_ATTACHMENT))
}

fn detail<'a>(a: &'a berth_api::ecs::Attachment, name: &str) -> Option<&'a str> {
    a.details
        .iter()
        .flatten()
        .find(|d| d.name.as_deref() == Some(name))
        .and_then(|d| d.value.as_deref())
}

/// The id of a task's interface, if it has one.
pub(crate) fn eni_id(t: &berth_api::ecs::Task) -> Option<String> {
    eni_attachment(t)
        .and_then(|a| detail(a, DETAIL_ENI))
        .map(str::to_string)
}

/// A task's private address, if it has an interface.
pub(crate) fn private_ip(t: &berth_api::ecs::Task) -> Option<String> {
    eni_attachment(t)
        .and_then(|a| detail(a, DETAIL_IP))
        .map(str::to_string)
}

/// The keys a task's interface holds (itself and its addresses), to delete when the task has
/// stopped: its addresses are then free for the next task.
pub(crate) fn release_keys(t: &berth_api::ecs::Task) -> Vec<String> {
    let Some(a) = eni_attachment(t) else {
        return Vec::new();
    };
    let mut k = Vec::new();
    if let Some(id) = detail(a, DETAIL_ENI) {
        k.push(keys::ec2_eni(id));
    }
    if let (Some(subnet), Some(ip)) = (detail(a, DETAIL_SUBNET), detail(a, DETAIL_IP)) {
        k.push(keys::ec2_ip(subnet, ip));
    }
    if let Some(p) = detail(a, DETAIL_PUBLIC_IP) {
        k.push(keys::ec2_public_ip(p));
    }
    k
}

/// Moves a task's interface attachment along with the task, as ECS does: PRECREATED while
/// it is pending, ATTACHED once it runs, DETACHED while it stops, DELETED
/// once it has stopped (its addresses are then given back). Pure.
pub(crate) fn follow_attachment(t: &mut berth_api::ecs::Task) {
    let last = t.last_status.clone().unwrap_or_default();
    let stopping = t.desired_status.as_deref() == Some("STOPPED");
    let Some(a) = t
        .attachments
        .iter_mut()
        .flatten()
        .find(|a| a.r#type.as_deref() == Some(ENI_ATTACHMENT))
    else {
        return;
    };
    let status = match last.as_str() {
        "STOPPED" => "DELETED",
        "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" => "DETACHED",
        _ if stopping && a.status.as_deref() == Some("ATTACHED") => "DETACHED",
        "RUNNING" => "ATTACHED",
        _ => return,
    };
    a.status = Some(status.into());
}

/// A task's resolved `awsvpcConfiguration`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Awsvpc {
    pub subnets: Vec<ec2::Subnet>,
    pub groups: Vec<String>,
    pub public: bool,
}

fn all_out() -> SgRule {
    SgRule {
        id: new_id("sgr"),
        egress: true,
        protocol: "-1".into(),
        from: -1,
        to: -1,
        cidr: Some("0.0.0.0/0".into()),
        group: None,
        description: None,
    }
}

/// One page of `items` in id order after `token` (an id), at most `max` (EC2's 5–1000).
fn page<T>(
    mut items: Vec<T>,
    id: impl Fn(&T) -> Option<String>,
    max: Option<i32>,
    token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), EcsError> {
    items.sort_by_key(|i| id(i));
    let limit = match max {
        None => usize::MAX,
        Some(n) if (5..=1000).contains(&n) => n as usize,
        Some(n) => {
            return Err(invalid(format!(
                "Value ( {n} ) for parameter maxResults is invalid. Parameter must be between 5 and 1000."
            )))
        }
    };
    let start = match token {
        Some(t) => {
            let after = crate::paging::decode_token(Some(t))
                .map_err(|_| invalid(format!("Invalid NextToken value {t}")))?
                .unwrap_or_default();
            items
                .iter()
                .position(|i| id(i).unwrap_or_default() > after)
                .unwrap_or(items.len())
        }
        None => 0,
    };
    let rest: Vec<T> = items.into_iter().skip(start).collect();
    let more = rest.len() > limit;
    let page: Vec<T> = rest.into_iter().take(limit).collect();
    let next = more
        .then(|| {
            page.last()
                .and_then(&id)
                .map(|k| crate::paging::token_for(&k))
        })
        .flatten();
    Ok((page, next))
}

fn describe_vpc_attribute(
    snap: &Snapshot,
    r: ec2::DescribeVpcAttributeRequest,
) -> Result<Value, EcsError> {
    let id = r.vpc_id.clone().unwrap_or_default();
    let (_, rec) = snap.vpc(&id)?;
    let yes = |v: bool| Some(ec2::AttributeBooleanValue { value: Some(v) });
    let mut res = ec2::DescribeVpcAttributeResult {
        vpc_id: Some(id),
        ..Default::default()
    };
    match r.attribute.as_deref().unwrap_or_default() {
        "enableDnsSupport" => res.enable_dns_support = yes(rec.dns_support),
        "enableDnsHostnames" => res.enable_dns_hostnames = yes(rec.dns_hostnames),
        "enableNetworkAddressUsageMetrics" => res.enable_network_address_usage_metrics = yes(false),
        other => {
            return Err(invalid(format!(
                "Value ({other}) for parameter attribute is invalid. Unknown attribute."
            )))
        }
    }
    out(res)
}

fn describe_subnets(snap: &Snapshot, r: ec2::DescribeSubnetsRequest) -> Result<Value, EcsError> {
    let ids = r.subnet_ids.clone().unwrap_or_default();
    for id in &ids {
        snap.subnet(id)?;
    }
    let filters = r.filters.clone().unwrap_or_default();
    let mut list = Vec::new();
    for (_, s) in &snap.subnets {
        let id = s.subnet_id.clone().unwrap_or_default();
        if !ids.is_empty() && !ids.contains(&id) {
            continue;
        }
        let mut s = s.clone();
        let total = s
            .cidr_block
            .as_deref()
            .and_then(Cidr::parse)
            .map(|c| c.assignable_count())
            .unwrap_or(0);
        s.available_ip_address_count = Some(total.saturating_sub(snap.used(&id) as u64) as i32);
        let fields = [
            ("subnet-id", vec![id.clone()]),
            ("vpc-id", vec![s.vpc_id.clone().unwrap_or_default()]),
            ("cidr-block", vec![s.cidr_block.clone().unwrap_or_default()]),
            ("cidr", vec![s.cidr_block.clone().unwrap_or_default()]),
            ("cidrBlock", vec![s.cidr_block.clone().unwrap_or_default()]),
            (
                "availability-zone",
                vec![s.availability_zone.clone().unwrap_or_default()],
            ),
            (
                "availabilityZone",
                vec![s.availability_zone.clone().unwrap_or_default()],
            ),
            (
                "availability-zone-id",
                vec![s.availability_zone_id.clone().unwrap_or_default()],
            ),
            (
                "default-for-az",
                vec![s.default_for_az.unwrap_or(false).to_string()],
            ),
            (
                "defaultForAz",
                vec![s.default_for_az.unwrap_or(false).to_string()],
            ),
            (
                "map-public-ip-on-launch",
                vec![s.map_public_ip_on_launch.unwrap_or(false).to_string()],
            ),
            ("state", vec!["available".into()]),
            ("owner-id", vec![s.owner_id.clone().unwrap_or_default()]),
            ("subnet-arn", vec![s.subnet_arn.clone().unwrap_or_default()]),
        ];
        let known: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
        if filtered(
            &filters,
            &known,
            &fields,
            s.tags.as_deref().unwrap_or_default(),
        )? {
            list.push(s);
        }
    }
    let (list, next) = page(
        list,
        |s| s.subnet_id.clone(),
        r.max_results,
        r.next_token.as_deref(),
    )?;
    out(ec2::DescribeSubnetsResult {
        subnets: Some(list),
        next_token: next,
    })
}

fn describe_security_groups(
    snap: &Snapshot,
    r: ec2::DescribeSecurityGroupsRequest,
) -> Result<Value, EcsError> {
    let ids = r.group_ids.clone().unwrap_or_default();
    for id in &ids {
        snap.sg(id)?;
    }
    let names = r.group_names.clone().unwrap_or_default();
    let default_vpc = snap
        .default_vpc()
        .and_then(|v| v.vpc.vpc_id.clone())
        .unwrap_or_default();
    for n in &names {
        if snap.sg_by_name(&default_vpc, n).is_none() {
            return Err(err(
                ErrorKind::InvalidGroupNotFound,
                format!("The security group '{n}' does not exist in default VPC '{default_vpc}'"),
            ));
        }
    }
    let filters = r.filters.clone().unwrap_or_default();
    let mut list = Vec::new();
    for (_, rec) in &snap.sgs {
        let g = &rec.group;
        let id = g.group_id.clone().unwrap_or_default();
        let name = g.group_name.clone().unwrap_or_default();
        if !ids.is_empty() && !ids.contains(&id) {
            continue;
        }
        if !names.is_empty()
            && (!names.contains(&name) || g.vpc_id.as_deref() != Some(default_vpc.as_str()))
        {
            continue;
        }
        let ingress_cidrs: Vec<String> = rec
            .rules
            .iter()
            .filter(|r| !r.egress)
            .filter_map(|r| r.cidr.clone())
            .collect();
        let ingress_ports: Vec<String> = rec
            .rules
            .iter()
            .filter(|r| !r.egress)
            .map(|r| r.from.to_string())
            .collect();
        let fields = [
            ("group-id", vec![id.clone()]),
            ("group-name", vec![name.clone()]),
            ("vpc-id", vec![g.vpc_id.clone().unwrap_or_default()]),
            (
                "description",
                vec![g.description.clone().unwrap_or_default()],
            ),
            ("owner-id", vec![g.owner_id.clone().unwrap_or_default()]),
            ("ip-permission.cidr", ingress_cidrs),
            ("ip-permission.from-port", ingress_ports),
        ];
        let known: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
        if filtered(
            &filters,
            &known,
            &fields,
            g.tags.as_deref().unwrap_or_default(),
        )? {
            list.push(group_view(rec));
        }
    }
    let (list, next) = page(
        list,
        |g| g.group_id.clone(),
        r.max_results,
        r.next_token.as_deref(),
    )?;
    out(ec2::DescribeSecurityGroupsResult {
        security_groups: Some(list),
        next_token: next,
    })
}

fn describe_security_group_rules(
    snap: &Snapshot,
    r: ec2::DescribeSecurityGroupRulesRequest,
) -> Result<Value, EcsError> {
    let ids = r.security_group_rule_ids.clone().unwrap_or_default();
    let filters = r.filters.clone().unwrap_or_default();
    let mut list = Vec::new();
    for (_, rec) in &snap.sgs {
        for rule in &rec.rules {
            if !ids.is_empty() && !ids.contains(&rule.id) {
                continue;
            }
            let fields = [
                (
                    "group-id",
                    vec![rec.group.group_id.clone().unwrap_or_default()],
                ),
                ("security-group-rule-id", vec![rule.id.clone()]),
            ];
            let known: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
            if filtered(&filters, &known, &fields, &[])? {
                list.push(rule_view(rec, rule));
            }
        }
    }
    for id in &ids {
        if !list
            .iter()
            .any(|r| r.security_group_rule_id.as_deref() == Some(id.as_str()))
        {
            return Err(err(
                ErrorKind::InvalidPermissionNotFound,
                format!("The security group rule ID '{id}' does not exist"),
            ));
        }
    }
    let (list, next) = page(
        list,
        |r| r.security_group_rule_id.clone(),
        r.max_results,
        r.next_token.as_deref(),
    )?;
    out(ec2::DescribeSecurityGroupRulesResult {
        security_group_rules: Some(list),
        next_token: next,
    })
}

/// An interface's wire shape.
pub(crate) fn eni_view(snap: &Snapshot, e: &EniRecord, owner: &str) -> ec2::NetworkInterface {
    let groups = e
        .groups
        .iter()
        .map(|g| ec2::GroupIdentifier {
            group_id: Some(g.clone()),
            group_name: snap
                .sg(g)
                .ok()
                .and_then(|(_, r)| r.group.group_name.clone()),
        })
        .collect();
    let dns = format!("ip-{}.ec2.internal", e.private_ip.replace('.', "-"));
    let association = e
        .public_ip
        .as_ref()
        .map(|p| ec2::NetworkInterfaceAssociation {
            public_ip: Some(p.clone()),
            ip_owner_id: Some("amazon".into()),
            ..Default::default()
        });
    ec2::NetworkInterface {
        network_interface_id: Some(e.id.clone()),
        subnet_id: Some(e.subnet_id.clone()),
        vpc_id: Some(e.vpc_id.clone()),
        availability_zone: Some(e.availability_zone.clone()),
        description: Some(format!("arn:aws:ecs:task-eni for {}", e.task_arn)),
        groups: Some(groups),
        interface_type: Some("interface".into()),
        mac_address: Some(e.mac.clone()),
        owner_id: Some(owner.to_string()),
        private_ip_address: Some(e.private_ip.clone()),
        private_dns_name: Some(dns.clone()),
        private_ip_addresses: Some(vec![ec2::NetworkInterfacePrivateIpAddress {
            primary: Some(true),
            private_ip_address: Some(e.private_ip.clone()),
            private_dns_name: Some(dns),
            association: association.clone(),
        }]),
        association,
        requester_id: Some("amazon-ecs".into()),
        requester_managed: Some(true),
        source_dest_check: Some(true),
        status: Some("in-use".into()),
        tag_set: Some(Vec::new()),
        ipv6_addresses: Some(Vec::new()),
        ..Default::default()
    }
}

fn describe_network_interfaces(
    snap: &Snapshot,
    r: ec2::DescribeNetworkInterfacesRequest,
) -> Result<Value, EcsError> {
    let ids = r.network_interface_ids.clone().unwrap_or_default();
    for id in &ids {
        if !snap.enis.iter().any(|(_, e)| &e.id == id) {
            return Err(err(
                ErrorKind::InvalidNetworkInterfaceIdNotFound,
                format!("The networkInterface ID '{id}' does not exist"),
            ));
        }
    }
    let filters = r.filters.clone().unwrap_or_default();
    let owner = snap
        .vpcs
        .first()
        .and_then(|(_, v)| v.vpc.owner_id.clone())
        .unwrap_or_default();
    let mut list = Vec::new();
    for (_, e) in &snap.enis {
        if !ids.is_empty() && !ids.contains(&e.id) {
            continue;
        }
        let fields = [
            ("network-interface-id", vec![e.id.clone()]),
            ("subnet-id", vec![e.subnet_id.clone()]),
            ("vpc-id", vec![e.vpc_id.clone()]),
            ("availability-zone", vec![e.availability_zone.clone()]),
            ("private-ip-address", vec![e.private_ip.clone()]),
            ("addresses.private-ip-address", vec![e.private_ip.clone()]),
            ("mac-address", vec![e.mac.clone()]),
            ("group-id", e.groups.clone()),
            ("status", vec!["in-use".into()]),
            (
                "association.public-ip",
                e.public_ip.iter().cloned().collect(),
            ),
            (
                "description",
                vec![format!("arn:aws:ecs:task-eni for {}", e.task_arn)],
            ),
        ];
        let known: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
        if filtered(&filters, &known, &fields, &[])? {
            list.push(eni_view(snap, e, &owner));
        }
    }
    let (list, next) = page(
        list,
        |n| n.network_interface_id.clone(),
        r.max_results,
        r.next_token.as_deref(),
    )?;
    out(ec2::DescribeNetworkInterfacesResult {
        network_interfaces: Some(list),
        next_token: next,
    })
}

fn describe_tags(snap: &Snapshot, r: ec2::DescribeTagsRequest) -> Result<Value, EcsError> {
    let filters = r.filters.clone().unwrap_or_default();
    let mut list = Vec::new();
    let mut push =
        |id: Option<&String>, kind: &str, tags: Option<&Vec<ec2::Tag>>| -> Result<(), EcsError> {
            for t in tags.into_iter().flatten() {
                let fields = [
                    ("resource-id", vec![id.cloned().unwrap_or_default()]),
                    ("resource-type", vec![kind.to_string()]),
                    ("key", vec![t.key.clone().unwrap_or_default()]),
                    ("value", vec![t.value.clone().unwrap_or_default()]),
                ];
                let known: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
                if filtered(&filters, &known, &fields, &[])? {
                    list.push(ec2::TagDescription {
                        resource_id: id.cloned(),
                        resource_type: Some(kind.to_string()),
                        key: t.key.clone(),
                        value: t.value.clone(),
                    });
                }
            }
            Ok(())
        };
    for (_, v) in &snap.vpcs {
        push(v.vpc.vpc_id.as_ref(), "vpc", v.vpc.tags.as_ref())?;
    }
    for (_, s) in &snap.subnets {
        push(s.subnet_id.as_ref(), "subnet", s.tags.as_ref())?;
    }
    for (_, g) in &snap.sgs {
        push(
            g.group.group_id.as_ref(),
            "security-group",
            g.group.tags.as_ref(),
        )?;
    }
    let (list, next) = page(
        list,
        |t| {
            Some(format!(
                "{}|{}",
                t.resource_id.clone().unwrap_or_default(),
                t.key.clone().unwrap_or_default()
            ))
        },
        r.max_results,
        r.next_token.as_deref(),
    )?;
    out(ec2::DescribeTagsResult {
        tags: Some(list),
        next_token: next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_ec2_filters_do() {
        assert!(glob("10.0.*", "10.0.1.0/24"));
        assert!(glob("web-?", "web-1"));
        assert!(!glob("web-?", "web-12"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "acbd"));
    }

    #[test]
    fn zones_are_named_for_the_region() {
        let z = zones("us-east-1");
        assert_eq!(z[0], ("us-east-1a".to_string(), "use1-az1".to_string()));
        assert_eq!(zones("eu-west-2")[2].1, "euw2-az3");
    }

    #[test]
    fn source_groups_resolve_to_their_members_addresses() {
        let rule = |egress, cidr: Option<&str>, group: Option<&str>| SgRule {
            id: "sgr-1".into(),
            egress,
            protocol: "tcp".into(),
            from: 80,
            to: 81,
            cidr: cidr.map(str::to_string),
            group: group.map(str::to_string),
            description: None,
        };
        let sg = |id: &str, rules| SgRecord {
            group: ec2::SecurityGroup {
                group_id: Some(id.into()),
                ..Default::default()
            },
            rules,
        };
        let eni = |id: &str, ip: &str, groups: &[&str]| EniRecord {
            id: id.into(),
            subnet_id: "subnet-1".into(),
            vpc_id: "vpc-1".into(),
            availability_zone: "us-east-1a".into(),
            subnet_cidr: "10.0.1.0/24".into(),
            private_ip: ip.into(),
            mac: "02:00:00:00:00:01".into(),
            public_ip: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            task_arn: "t".into(),
            created_at: 0.0,
        };
        let kv = |k: &str| KeyValue {
            key: k.into(),
            value: Vec::new(),
            create_revision: 1,
            mod_revision: 1,
        };
        let snap = Snapshot {
            sgs: vec![
                (
                    kv("a"),
                    sg(
                        "sg-web",
                        vec![
                            rule(false, None, Some("sg-lb")),
                            rule(true, Some("0.0.0.0/0"), None),
                        ],
                    ),
                ),
                (kv("b"), sg("sg-lb", vec![])),
            ],
            enis: vec![
                (kv("c"), eni("eni-1", "10.0.1.4", &["sg-lb"])),
                (kv("d"), eni("eni-2", "10.0.1.5", &["sg-web"])),
            ],
            ..Default::default()
        };
        let p = snap.policies(&["sg-web".to_string()].into_iter().collect());
        let web = &p["sg-web"];
        assert_eq!(web.ingress.len(), 1, "{web:?}");
        assert_eq!(
            web.ingress[0].cidrs,
            vec!["10.0.1.4/32"],
            "only the lb group's member may come in"
        );
        assert_eq!(web.ingress[0].ports, Some((80, 81)));
        assert_eq!(web.egress[0].cidrs, vec!["0.0.0.0/0"]);
    }
}
