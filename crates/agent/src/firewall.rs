//! Security groups as iptables rules on an `awsvpc` task's interface.
//!
//! [`ruleset`] turns the rules of a task's groups into `iptables-restore` input for the filter
//! table of the task's network namespace (the pause container's): everything is dropped but
//! loopback, replies to allowed traffic (groups are stateful), and what some rule of some group
//! allows. The runtime loads it ([`crate::runtime::Runtime::apply_firewall`]); `iptables-restore`
//! replaces the whole table at once, so a changed policy never leaves a half-applied mix.

use berth_agent_proto::{SecurityPolicy, SecurityRule};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// What every task's table starts with.
const BASE: &[&str] = &[
    "*filter",
    ":INPUT DROP [0:0]",
    ":FORWARD DROP [0:0]",
    ":OUTPUT DROP [0:0]",
    "-A INPUT -i lo -j ACCEPT",
    "-A OUTPUT -o lo -j ACCEPT",
    "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
];

/// The `iptables-restore` input enforcing `groups` together: ingress rules in INPUT (peers as
/// sources), egress rules in OUTPUT (peers as destinations), each rule once, in the order the
/// groups and their rules come. DNS to `dns` (the resolvers Docker's embedded DNS server asks
/// from inside the task's namespace) is always let out, as security groups never filter a
/// VPC's own DNS server. Pure.
pub fn ruleset(groups: &[&SecurityPolicy], dns: &[Ipv4Addr]) -> String {
    let mut lines: Vec<String> = BASE.iter().map(|l| l.to_string()).collect();
    for server in dns {
        for proto in ["udp", "tcp"] {
            lines.push(format!(
                "-A OUTPUT -d {server}/32 -p {proto} --dport 53 -j ACCEPT"
            ));
        }
    }
    let mut seen = HashSet::new();
    let ingress = groups
        .iter()
        .flat_map(|g| &g.ingress)
        .map(|r| ("INPUT", "-s", r));
    let egress = groups
        .iter()
        .flat_map(|g| &g.egress)
        .map(|r| ("OUTPUT", "-d", r));
    for (chain, peer, rule) in ingress.chain(egress) {
        for line in rule_lines(chain, peer, rule) {
            if seen.insert(line.clone()) {
                lines.push(line);
            }
        }
    }
    lines.push("COMMIT".into());
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// One `-A` line per peer of `rule`. A protocol or a peer that is not one iptables can be given
/// safely (the server resolves peers to IPv4 blocks) allows nothing rather than reaching
/// `iptables-restore`, whose input is line-based.
fn rule_lines(chain: &str, peer: &str, rule: &SecurityRule) -> Vec<String> {
    let (proto, ports) = match rule.protocol.as_str() {
        "all" | "-1" => (String::new(), String::new()),
        p @ ("tcp" | "udp") => {
            let ports = match rule.ports {
                Some((a, b)) if a == b => format!(" --dport {a}"),
                Some((a, b)) => format!(" --dport {}:{}", a.min(b), a.max(b)),
                None => String::new(),
            };
            (format!(" -p {p}"), ports)
        }
        p if !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()) => {
            (format!(" -p {p}"), String::new())
        }
        _ => return Vec::new(),
    };
    rule.cidrs
        .iter()
        .filter_map(|c| {
            let (addr, len) = c.split_once('/').unwrap_or((c.as_str(), "32"));
            addr.parse::<Ipv4Addr>().ok()?;
            let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
            let from_or_to = if len == 0 {
                String::new()
            } else {
                format!(" {peer} {c}")
            };
            Some(format!("-A {chain}{proto}{from_or_to}{ports} -j ACCEPT"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(protocol: &str, ports: Option<(u16, u16)>, cidrs: &[&str]) -> SecurityRule {
        SecurityRule {
            protocol: protocol.into(),
            ports,
            cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// The lines after the fixed start, without COMMIT.
    fn rules(text: &str) -> Vec<&str> {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&lines[..BASE.len()], BASE);
        assert_eq!(lines.last(), Some(&"COMMIT"));
        lines[BASE.len()..lines.len() - 1].to_vec()
    }

    #[test]
    fn rules_of_several_groups_combine_once_each() {
        let web = SecurityPolicy {
            ingress: vec![rule("tcp", Some((80, 80)), &["0.0.0.0/0"])],
            egress: vec![rule("all", None, &["0.0.0.0/0"])],
        };
        let admin = SecurityPolicy {
            ingress: vec![
                rule("tcp", Some((80, 80)), &["0.0.0.0/0"]),
                rule("tcp", Some((8000, 8100)), &["10.0.1.0/24", "10.0.2.7/32"]),
                rule("udp", Some((53, 53)), &["10.0.0.0/16"]),
            ],
            egress: vec![rule("tcp", None, &["10.0.0.0/16"])],
        };
        let text = ruleset(&[&web, &admin], &[]);
        assert!(text.ends_with("COMMIT\n"));
        assert_eq!(
            rules(&text),
            [
                "-A INPUT -p tcp --dport 80 -j ACCEPT",
                "-A INPUT -p tcp -s 10.0.1.0/24 --dport 8000:8100 -j ACCEPT",
                "-A INPUT -p tcp -s 10.0.2.7/32 --dport 8000:8100 -j ACCEPT",
                "-A INPUT -p udp -s 10.0.0.0/16 --dport 53 -j ACCEPT",
                "-A OUTPUT -j ACCEPT",
                "-A OUTPUT -p tcp -d 10.0.0.0/16 -j ACCEPT",
            ]
        );
        assert_eq!(text, ruleset(&[&web, &admin], &[]), "deterministic");
    }

    #[test]
    fn icmp_and_all_protocol_rules_name_no_ports() {
        let g = SecurityPolicy {
            ingress: vec![
                rule("icmp", Some((8, 0)), &["192.168.0.0/16"]),
                rule("all", Some((1, 2)), &["10.0.0.5"]),
                rule("-1", None, &["10.0.0.6/32"]),
            ],
            egress: vec![rule("icmp", None, &["0.0.0.0/0"])],
        };
        assert_eq!(
            rules(&ruleset(&[&g], &[])),
            [
                "-A INPUT -p icmp -s 192.168.0.0/16 -j ACCEPT",
                "-A INPUT -s 10.0.0.5 -j ACCEPT",
                "-A INPUT -s 10.0.0.6/32 -j ACCEPT",
                "-A OUTPUT -p icmp -j ACCEPT",
            ]
        );
    }

    #[test]
    fn dns_to_the_hosts_resolvers_is_always_let_out() {
        let text = ruleset(&[], &[Ipv4Addr::new(10, 255, 255, 53)]);
        assert_eq!(
            rules(&text),
            [
                "-A OUTPUT -d 10.255.255.53/32 -p udp --dport 53 -j ACCEPT",
                "-A OUTPUT -d 10.255.255.53/32 -p tcp --dport 53 -j ACCEPT",
            ]
        );
    }

    #[test]
    fn an_empty_policy_allows_only_loopback_and_replies() {
        let text = ruleset(&[&SecurityPolicy::default()], &[]);
        assert!(rules(&text).is_empty());
        assert_eq!(text, ruleset(&[], &[]));
        assert!(text.starts_with("*filter\n:INPUT DROP [0:0]\n"));
    }

    #[test]
    fn peers_and_protocols_that_are_not_plain_never_reach_iptables() {
        let g = SecurityPolicy {
            ingress: vec![
                rule(
                    "tcp",
                    None,
                    &["10.0.0.0/8 -j DROP", "::/0", "10.0.0.0/33", "x"],
                ),
                rule("tcp\nCOMMIT", None, &["10.0.0.0/8"]),
            ],
            egress: vec![],
        };
        assert!(rules(&ruleset(&[&g], &[])).is_empty());
    }
}
