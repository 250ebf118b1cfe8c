//! Placement as a pure function: given a snapshot of a cluster's instances and what a task
//! needs, decide where each copy goes, or why it cannot go anywhere, in ECS's words.
//!
//! This is the first-fit placer: instances are tried in snapshot order and the first that
//! fits takes the task. The placement-engine issue replaces the choice (strategies,
//! constraints, the cluster query language) behind the same [`place`] signature; the filters
//! and the failure reasons stay.
//!
//! The caller commits the result against the revisions the snapshot was read at, so two
//! concurrent placements can never both take the same capacity.

pub mod query;

use std::collections::{BTreeMap, BTreeSet};

/// One container instance as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub arn: String,
    /// ACTIVE (not DRAINING, not INACTIVE).
    pub active: bool,
    pub agent_connected: bool,
    /// Remaining CPU units and MiB.
    pub cpu: i64,
    pub memory: i64,
    /// Host ports taken (reserved or in use), TCP and UDP.
    pub ports_used: BTreeSet<u16>,
    pub udp_ports_used: BTreeSet<u16>,
    pub attributes: BTreeMap<String, Option<String>>,
}

/// What one copy of a task needs from an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demand {
    pub cpu: i64,
    pub memory: i64,
    /// Static host ports (bridge mode with a hostPort, or every containerPort in host mode).
    pub ports: Vec<u16>,
    pub udp_ports: Vec<u16>,
    /// Attribute names the instance must have (`ecs.capability.*`, `com.amazonaws.ecs.*`).
    pub required_attributes: Vec<String>,
}

/// Why an instance cannot take a task, in ECS's failure-reason words.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The instance is DRAINING or INACTIVE.
    Inactive,
    /// Its agent is not connected.
    Agent,
    Attribute(String),
    Cpu,
    Memory,
    Ports,
}

impl Reason {
    /// The `reason` member of ECS's `Failure`.
    pub fn ecs_reason(&self) -> String {
        match self {
            Reason::Inactive => "INACTIVE".into(),
            Reason::Agent => "AGENT".into(),
            Reason::Attribute(_) => "ATTRIBUTE".into(),
            Reason::Cpu => "RESOURCE:CPU".into(),
            Reason::Memory => "RESOURCE:MEMORY".into(),
            Reason::Ports => "RESOURCE:PORTS".into(),
        }
    }

    /// The `detail` member, where there is more to say.
    pub fn detail(&self) -> Option<String> {
        match self {
            Reason::Attribute(name) => Some(format!("missing attribute {name}")),
            _ => None,
        }
    }
}

/// The first reason `c` cannot take `d`, checked in ECS's order; `None` when it fits.
pub fn misfit(c: &Candidate, d: &Demand) -> Option<Reason> {
    if !c.active {
        return Some(Reason::Inactive);
    }
    if !c.agent_connected {
        return Some(Reason::Agent);
    }
    if let Some(a) = d
        .required_attributes
        .iter()
        .find(|a| !c.attributes.contains_key(*a))
    {
        return Some(Reason::Attribute(a.clone()));
    }
    if d.cpu > c.cpu {
        return Some(Reason::Cpu);
    }
    if d.memory > c.memory {
        return Some(Reason::Memory);
    }
    if d.ports.iter().any(|p| c.ports_used.contains(p))
        || d.udp_ports.iter().any(|p| c.udp_ports_used.contains(p))
    {
        return Some(Reason::Ports);
    }
    None
}

/// Takes `d`'s resources from `c`.
pub fn take(c: &mut Candidate, d: &Demand) {
    c.cpu -= d.cpu;
    c.memory -= d.memory;
    c.ports_used.extend(d.ports.iter().copied());
    c.udp_ports_used.extend(d.udp_ports.iter().copied());
}

/// The outcome for `count` copies: `placed[i]` is the index of the candidate copy `i` went
/// to; `failures` holds, for the copies that fit nowhere, each candidate's reason (one entry per
/// candidate, as ECS reports them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub placed: Vec<usize>,
    pub failures: Vec<(usize, Reason)>,
}

/// Places `count` copies of `d` first-fit, taking their resources from `candidates` as it goes
/// so the caller can write the remainders back.
pub fn place(candidates: &mut [Candidate], d: &Demand, count: usize) -> Placement {
    let mut out = Placement::default();
    for _ in 0..count {
        match (0..candidates.len()).find(|&i| misfit(&candidates[i], d).is_none()) {
            Some(i) => {
                take(&mut candidates[i], d);
                out.placed.push(i);
            }
            None => {
                out.failures = candidates
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| misfit(c, d).map(|r| (i, r)))
                    .collect();
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host(arn: &str, cpu: i64, memory: i64) -> Candidate {
        Candidate {
            arn: arn.into(),
            active: true,
            agent_connected: true,
            cpu,
            memory,
            ports_used: [22].into(),
            udp_ports_used: BTreeSet::new(),
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn first_fit_fills_the_first_host_then_the_next() {
        let mut c = vec![host("a", 1024, 512), host("b", 1024, 512)];
        let d = Demand {
            cpu: 256,
            memory: 256,
            ..Default::default()
        };
        let p = place(&mut c, &d, 3);
        assert_eq!(p.placed, [0, 0, 1]);
        assert!(p.failures.is_empty());
        assert_eq!((c[0].cpu, c[0].memory), (512, 0));
    }

    #[test]
    fn failures_give_each_hosts_reason_in_ecs_words() {
        let mut c = vec![
            host("a", 100, 4096),
            host("b", 4096, 100),
            host("c", 4096, 4096),
        ];
        c[2].ports_used.insert(80);
        let d = Demand {
            cpu: 512,
            memory: 512,
            ports: vec![80],
            ..Default::default()
        };
        let p = place(&mut c, &d, 1);
        assert!(p.placed.is_empty());
        let reasons: Vec<String> = p.failures.iter().map(|(_, r)| r.ecs_reason()).collect();
        assert_eq!(
            reasons,
            ["RESOURCE:CPU", "RESOURCE:MEMORY", "RESOURCE:PORTS"]
        );
    }

    #[test]
    fn drained_disconnected_and_unequipped_hosts_are_skipped() {
        let mut c = vec![
            host("a", 4096, 4096),
            host("b", 4096, 4096),
            host("c", 4096, 4096),
        ];
        c[0].active = false;
        c[1].agent_connected = false;
        let d = Demand {
            cpu: 1,
            memory: 1,
            required_attributes: vec!["ecs.capability.docker-plugin.local".into()],
            ..Default::default()
        };
        let p = place(&mut c, &d, 1);
        assert_eq!(
            p.failures,
            [
                (0, Reason::Inactive),
                (1, Reason::Agent),
                (
                    2,
                    Reason::Attribute("ecs.capability.docker-plugin.local".into())
                )
            ]
        );
    }

    #[test]
    fn a_static_port_goes_once_per_host() {
        let mut c = vec![host("a", 4096, 4096), host("b", 4096, 4096)];
        let d = Demand {
            cpu: 1,
            memory: 1,
            ports: vec![8080],
            ..Default::default()
        };
        let p = place(&mut c, &d, 3);
        assert_eq!(p.placed, [0, 1]);
        assert_eq!(p.failures.len(), 2);
    }

    proptest! {
        /// Whatever the hosts and demands, no host ends with negative CPU or memory and no
        /// port is handed out twice.
        #[test]
        fn never_over_commits(
            hosts in prop::collection::vec((0i64..4096, 0i64..8192), 1..8),
            demands in prop::collection::vec((0i64..2048, 0i64..4096, prop::option::of(1u16..5), 1usize..10), 1..20),
        ) {
            let mut c: Vec<Candidate> = hosts.iter().enumerate().map(|(i, (cpu, mem))| host(&i.to_string(), *cpu, *mem)).collect();
            let mut taken: Vec<BTreeSet<u16>> = vec![BTreeSet::new(); c.len()];
            for (cpu, memory, port, count) in demands {
                let d = Demand { cpu, memory, ports: port.into_iter().collect(), ..Default::default() };
                let p = place(&mut c, &d, count);
                prop_assert!(p.placed.len() == count || !p.failures.is_empty());
                for i in p.placed {
                    for port in &d.ports {
                        prop_assert!(taken[i].insert(*port), "port {} handed out twice on host {}", port, i);
                    }
                }
            }
            for h in &c {
                prop_assert!(h.cpu >= 0 && h.memory >= 0, "host {} over-committed: {:?}", h.arn, h);
            }
        }
    }
}
