//! Placement as a pure function: given a snapshot of a cluster's instances, what a task needs
//! and the request's rules, decide where each copy goes, or why it cannot go anywhere, in ECS's
//! words.
//!
//! ECS's order: the instance must be ACTIVE with its agent connected, have the attributes the
//! task definition requires, the CPU, memory and static host ports; then the constraints
//! (`distinctInstance`, `memberOf(expression)` in the [`query`] language) must hold; then the
//! strategies, up to five, each keeping only the best candidates of the one before (`binpack`
//! on cpu or memory, `spread` on `instanceId`/`host` or `attribute:NAME` across the tasks of
//! the same group, `random`, seeded by the request). Remaining ties are broken by [`rank`], a
//! fixed pseudo-random order of instances, so the same input and seed always give the same
//! output.
//!
//! [`place`] scans every candidate for every copy: exact and simple, the reference.
//! [`index::ClusterIndex`] gives the same answers from ordered indices kept current as tasks
//! are placed, for the strategy chains clusters use most, and falls back to the scan for the
//! rest.
//!
//! The caller commits the result against the revisions the snapshot was read at, so two
//! concurrent placements can never both take the same capacity.

pub mod capacity;
pub mod index;
pub mod query;

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One container instance as placement sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidate {
    pub arn: String,
    pub ec2_instance_id: String,
    pub agent_version: Option<String>,
    /// Seconds since the epoch.
    pub registered_at: f64,
    /// Tasks not yet stopped, by task group.
    pub groups: BTreeMap<String, u32>,
    pub running_tasks_count: u64,
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
    DistinctInstance,
    MemberOf,
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
            Reason::DistinctInstance => "DistinctInstance placement constraint unsatisfied.".into(),
            Reason::MemberOf => "MemberOf placement constraint unsatisfied.".into(),
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

/// A binding rule: every placement must satisfy it.
#[derive(Debug, Clone)]
pub enum Constraint {
    /// No two tasks of the group on one instance.
    DistinctInstance,
    MemberOf(query::Expr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpreadField {
    /// `instanceId` or `host`.
    Instance,
    Attribute(String),
}

/// A preference: each keeps the best of the candidates the one before left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    Random,
    Binpack(Resource),
    Spread(SpreadField),
}

/// How to place: the request's constraints, strategies and task group.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub constraints: Vec<Constraint>,
    pub strategies: Vec<Strategy>,
    /// The task group the copies join (`family:NAME` unless given), for spread and
    /// distinctInstance.
    pub group: String,
    /// Seeds `random` and the final tie-break.
    pub seed: u64,
}

/// The outcome for `count` copies: `placed[i]` is the index of the candidate copy `i` went
/// to; `failures` holds, for the copies that fit nowhere, each candidate's reason (one entry per
/// candidate, as ECS reports them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub placed: Vec<usize>,
    pub failures: Vec<(usize, Reason)>,
}

impl query::Subject for Candidate {
    fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.attributes.get(name).map(|v| v.as_deref())
    }
    fn agent_connected(&self) -> bool {
        self.agent_connected
    }
    fn agent_version(&self) -> Option<&str> {
        self.agent_version.as_deref()
    }
    fn ec2_instance_id(&self) -> &str {
        &self.ec2_instance_id
    }
    fn registered_at(&self) -> f64 {
        self.registered_at
    }
    fn running_tasks_count(&self) -> u64 {
        self.running_tasks_count
    }
    fn has_group(&self, group: &str) -> bool {
        self.groups.get(group).is_some_and(|n| *n > 0)
    }
    fn has_any_group(&self) -> bool {
        self.groups.values().any(|n| *n > 0)
    }
}

/// The first reason `c` cannot take a copy under `rules`, resources first.
pub fn rejects(c: &Candidate, d: &Demand, rules: &Rules) -> Option<Reason> {
    if let Some(r) = misfit(c, d) {
        return Some(r);
    }
    for k in &rules.constraints {
        match k {
            Constraint::DistinctInstance if query::Subject::has_group(c, &rules.group) => {
                return Some(Reason::DistinctInstance)
            }
            Constraint::MemberOf(e) if !e.matches(c) => return Some(Reason::MemberOf),
            _ => {}
        }
    }
    None
}

/// SplitMix64: a good, tiny, deterministic mixer for seeded choices.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The final tie-break between otherwise equal candidates: a fixed pseudo-random order of
/// instances, so ties do not always fall to the first instance registered.
pub fn rank(arn: &str) -> u64 {
    mix(hash_str(arn))
}

fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Places `count` copies of `d` under `rules`, taking their resources (and their group
/// membership) from `candidates` as it goes, so the caller can write the remainders back.
pub fn place(candidates: &mut [Candidate], d: &Demand, rules: &Rules, count: usize) -> Placement {
    let mut out = Placement::default();
    let ids: Vec<u64> = candidates.iter().map(|c| hash_str(&c.arn)).collect();
    for copy in 0..count {
        let feasible: Vec<usize> = (0..candidates.len())
            .filter(|&i| rejects(&candidates[i], d, rules).is_none())
            .collect();
        if feasible.is_empty() {
            out.failures = candidates
                .iter()
                .enumerate()
                .filter_map(|(i, c)| rejects(c, d, rules).map(|r| (i, r)))
                .collect();
            break;
        }
        let round = mix(rules.seed ^ mix(copy as u64));
        let mut set = feasible;
        for s in &rules.strategies {
            if set.len() <= 1 {
                break;
            }
            // Each value's task count for a spread over an attribute, counted once per step.
            let per_value: HashMap<Option<&str>, u64> = match s {
                Strategy::Spread(SpreadField::Attribute(name)) => {
                    let mut m = HashMap::new();
                    for o in candidates.iter() {
                        *m.entry(o.attributes.get(name).map(|v| v.as_deref().unwrap_or("")))
                            .or_default() +=
                            u64::from(o.groups.get(&rules.group).copied().unwrap_or(0));
                    }
                    m
                }
                _ => HashMap::new(),
            };
            let key = |i: usize| -> u64 {
                let c = &candidates[i];
                match s {
                    Strategy::Random => mix(round ^ ids[i]),
                    Strategy::Binpack(Resource::Memory) => c.memory.max(0) as u64,
                    Strategy::Binpack(Resource::Cpu) => c.cpu.max(0) as u64,
                    Strategy::Spread(SpreadField::Instance) => {
                        u64::from(c.groups.get(&rules.group).copied().unwrap_or(0))
                    }
                    Strategy::Spread(SpreadField::Attribute(name)) => per_value
                        .get(&c.attributes.get(name).map(|v| v.as_deref().unwrap_or("")))
                        .copied()
                        .unwrap_or(0),
                }
            };
            let keys: Vec<(usize, u64)> = set.iter().map(|&i| (i, key(i))).collect();
            let best = keys.iter().map(|(_, k)| *k).min().unwrap_or(0);
            set = keys
                .into_iter()
                .filter(|(_, k)| *k == best)
                .map(|(i, _)| i)
                .collect();
        }
        let chosen = set
            .into_iter()
            .min_by_key(|&i| (rank(&candidates[i].arn), i))
            .unwrap_or(0);
        let c = &mut candidates[chosen];
        take(c, d);
        *c.groups.entry(rules.group.clone()).or_default() += 1;
        c.running_tasks_count += 1;
        out.placed.push(chosen);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Strategy;
    use super::*;
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest, Just};
    use proptest::strategy::Strategy as Gen;

    fn host(arn: &str, cpu: i64, memory: i64) -> Candidate {
        Candidate {
            arn: arn.into(),
            ec2_instance_id: format!("i-{arn}"),
            active: true,
            agent_connected: true,
            cpu,
            memory,
            ports_used: [22].into(),
            ..Default::default()
        }
    }

    fn az(mut c: Candidate, zone: &str) -> Candidate {
        c.attributes
            .insert("ecs.availability-zone".into(), Some(zone.into()));
        c
    }

    fn rules(strategies: Vec<Strategy>) -> Rules {
        Rules {
            strategies,
            group: "family:web".into(),
            seed: 7,
            ..Default::default()
        }
    }

    fn small() -> Demand {
        Demand {
            cpu: 256,
            memory: 256,
            ..Default::default()
        }
    }

    #[test]
    fn binpack_fills_the_fullest_host_first() {
        let mut c = vec![
            host("a", 4096, 2048),
            host("b", 4096, 1024),
            host("c", 4096, 4096),
        ];
        let p = place(
            &mut c,
            &small(),
            &rules(vec![Strategy::Binpack(Resource::Memory)]),
            5,
        );
        assert_eq!(
            p.placed,
            [1, 1, 1, 1, 0],
            "b (least memory) until full, then a"
        );
    }

    #[test]
    fn spread_balances_the_group_across_zones_then_instances() {
        let mut c = vec![
            az(host("a1", 4096, 4096), "a"),
            az(host("a2", 4096, 4096), "a"),
            az(host("b1", 4096, 4096), "b"),
            az(host("c1", 4096, 4096), "c"),
        ];
        let r = rules(vec![
            Strategy::Spread(SpreadField::Attribute("ecs.availability-zone".into())),
            Strategy::Spread(SpreadField::Instance),
        ]);
        let p = place(&mut c, &small(), &r, 6);
        let per = |i: usize| p.placed.iter().filter(|&&x| x == i).count();
        assert_eq!((per(0) + per(1), per(2), per(3)), (2, 2, 2), "two per zone");
        assert_eq!((per(0), per(1)), (1, 1), "and spread inside zone a");
    }

    #[test]
    fn constraints_bind_and_fail_in_ecs_words() {
        let mut c = vec![host("a", 4096, 4096), host("b", 4096, 4096)];
        c[1].attributes
            .insert("ecs.instance-type".into(), Some("g2.large".into()));
        let mut r = rules(vec![]);
        r.constraints = vec![
            Constraint::DistinctInstance,
            Constraint::MemberOf(query::parse("attribute:ecs.instance-type =~ g2.*").unwrap()),
        ];
        let p = place(&mut c, &small(), &r, 2);
        assert_eq!(p.placed, [1]);
        assert_eq!(
            p.failures
                .iter()
                .map(|(i, r)| (*i, r.ecs_reason()))
                .collect::<Vec<_>>(),
            [
                (0, "MemberOf placement constraint unsatisfied.".to_string()),
                (
                    1,
                    "DistinctInstance placement constraint unsatisfied.".to_string()
                )
            ]
        );
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
        let p = place(&mut c, &d, &Rules::default(), 1);
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
        let p = place(&mut c, &d, &Rules::default(), 1);
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
        let p = place(&mut c, &d, &Rules::default(), 3);
        let mut placed = p.placed.clone();
        placed.sort_unstable();
        assert_eq!(placed, [0, 1]);
        assert_eq!(p.failures.len(), 2);
    }

    fn cluster() -> impl Gen<Value = Vec<Candidate>> {
        prop::collection::vec(
            (256i64..4096, 256i64..8192, 0usize..3, any::<bool>()),
            1..12,
        )
        .prop_map(|hosts| {
            hosts
                .into_iter()
                .enumerate()
                .map(|(i, (cpu, mem, zone, big))| {
                    let mut c = az(host(&format!("h{i}"), cpu, mem), ["a", "b", "c"][zone]);
                    c.attributes.insert(
                        "ecs.instance-type".into(),
                        Some(if big { "m5.large" } else { "t3.small" }.into()),
                    );
                    c
                })
                .collect()
        })
    }

    fn strategies() -> impl Gen<Value = Vec<Strategy>> {
        prop::collection::vec(
            prop_oneof![
                Just(Strategy::Random),
                Just(Strategy::Binpack(Resource::Memory)),
                Just(Strategy::Binpack(Resource::Cpu)),
                Just(Strategy::Spread(SpreadField::Instance)),
                Just(Strategy::Spread(SpreadField::Attribute(
                    "ecs.availability-zone".into()
                ))),
            ],
            0..5,
        )
    }

    proptest! {
        /// Whatever the hosts, rules and demands: no host over-committed, no port handed out
        /// twice, no constraint violated, and the same seed gives the same answer.
        #[test]
        fn never_over_commits_or_breaks_a_constraint(
            hosts in cluster(),
            strategies in strategies(),
            distinct in any::<bool>(),
            member in any::<bool>(),
            seed in any::<u64>(),
            demands in prop::collection::vec((0i64..1024, 0i64..2048, prop::option::of(1u16..5), 1usize..10), 1..8),
        ) {
            let mut r = Rules { strategies, group: "family:p".into(), seed, ..Default::default() };
            if distinct { r.constraints.push(Constraint::DistinctInstance); }
            let expr = "attribute:ecs.instance-type == m5.large";
            if member { r.constraints.push(Constraint::MemberOf(query::parse(expr).unwrap())); }
            let mut c = hosts.clone();
            let mut again = hosts.clone();
            let mut taken: Vec<BTreeSet<u16>> = vec![BTreeSet::new(); c.len()];
            let mut per_host = vec![0usize; c.len()];
            for (cpu, memory, port, count) in demands {
                let d = Demand { cpu, memory, ports: port.into_iter().collect(), ..Default::default() };
                let p = place(&mut c, &d, &r, count);
                prop_assert_eq!(&p, &place(&mut again, &d, &r, count), "same input and seed, same answer");
                prop_assert!(p.placed.len() == count || !p.failures.is_empty());
                for i in p.placed {
                    per_host[i] += 1;
                    for port in &d.ports {
                        prop_assert!(taken[i].insert(*port), "port {} handed out twice on host {}", port, i);
                    }
                    if member {
                        prop_assert_eq!(c[i].attributes["ecs.instance-type"].as_deref(), Some("m5.large"));
                    }
                }
            }
            for (i, h) in c.iter().enumerate() {
                prop_assert!(h.cpu >= 0 && h.memory >= 0, "host {} over-committed: {:?}", h.arn, h);
                if distinct {
                    prop_assert!(per_host[i] <= 1, "distinctInstance broken on host {}", i);
                }
            }
        }

        /// Spread over zones keeps the most and least loaded zones within one task of each
        /// other when every zone has room.
        #[test]
        fn spread_keeps_zones_within_one(n in 1usize..60, zones in 2usize..6, seed in any::<u64>()) {
            let mut c: Vec<Candidate> = (0..zones * 2)
                .map(|i| az(host(&format!("h{i}"), 1 << 20, 1 << 20), &format!("z{}", i % zones)))
                .collect();
            let r = Rules {
                strategies: vec![Strategy::Spread(SpreadField::Attribute("ecs.availability-zone".into()))],
                group: "g".into(),
                seed,
                ..Default::default()
            };
            let p = place(&mut c, &small(), &r, n);
            let mut per_zone = vec![0usize; zones];
            for i in p.placed {
                per_zone[i % zones] += 1;
            }
            let (max, min) = (per_zone.iter().max().unwrap(), per_zone.iter().min().unwrap());
            prop_assert!(max - min <= 1, "{:?}", per_zone);
        }
    }

    /// Binpack packs the same workload onto fewer instances than random does.
    #[test]
    fn binpack_uses_fewer_instances_than_random() {
        let hosts: Vec<Candidate> = (0..50)
            .map(|i| host(&format!("h{i}"), 8192, 8192))
            .collect();
        let used = |s: Strategy| {
            let mut c = hosts.clone();
            let p = place(&mut c, &small(), &rules(vec![s]), 100);
            assert_eq!(p.placed.len(), 100);
            p.placed.iter().collect::<BTreeSet<_>>().len()
        };
        let (binpack, random) = (
            used(Strategy::Binpack(Resource::Memory)),
            used(Strategy::Random),
        );
        assert_eq!(binpack, 4, "32 copies of 256 MiB fill an 8 GiB host");
        assert!(
            random > 3 * binpack,
            "random used {random} hosts, binpack {binpack}"
        );
    }
}
