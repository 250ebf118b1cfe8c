//! The indexed engine: the same answers as [`place`](crate::place), without scanning every
//! instance for every copy.
//!
//! A [`ClusterIndex`] owns the instances of one snapshot and keeps, per strategy chain it has
//! been asked for, ordered sets of `(key, rank, instance)` — the key being remaining memory or
//! CPU (binpack), or the group's task count (spread on instances) — partitioned by the value of
//! a leading `spread(attribute:NAME)`, plus each group's task count per value. A copy then costs
//! a walk from each partition's lower bound to its first feasible instance, and a placement
//! updates the few sets the chosen instance is in. Static `memberOf` expressions are evaluated
//! once per instance and cached.
//!
//! Supported chains: `[spread(attribute)]? [binpack(cpu|memory) | spread(instanceId)]?` with
//! `distinctInstance` and static `memberOf` constraints. Anything else (random, longer chains,
//! expressions on `task:group`) goes to the full scan over the same instances, so every answer
//! is exact.

use crate::{
    query, rejects, take, Candidate, Constraint, Demand, Placement, Reason, Resource, Rules,
    SpreadField, Strategy,
};
use std::collections::{BTreeSet, HashMap, HashSet};

/// What orders the instances of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyKind {
    /// Only the rank: no strategy after the partition.
    Rank,
    Memory,
    Cpu,
    /// The number of tasks of this group on the instance.
    Group(String),
}

type Entry = (u64, u64, u32);

/// Indices kept at once; the least recently used goes first.
const MAX_INDICES: usize = 64;

#[derive(Debug, Default)]
struct OrderedIndex {
    /// By partition: the value of the spread attribute (`None`: no attribute or no
    /// partitioning) and, for keys that are not a resource, the instance's CPU class, so that
    /// instances too full for a copy are passed over a class at a time instead of one by one.
    parts: HashMap<(Option<String>, u8), BTreeSet<Entry>>,
}

/// `⌈log2(cpu + 1)⌉`: class k holds CPU in `[2^(k-1), 2^k)`; class 0 holds none.
fn cpu_class(key: &KeyKind, c: &Candidate) -> u8 {
    match key {
        KeyKind::Memory | KeyKind::Cpu => 0,
        KeyKind::Rank | KeyKind::Group(_) => (64 - (c.cpu.max(0) as u64).leading_zeros()) as u8,
    }
}

/// Whether a class may hold an instance with `cpu` units left.
fn class_may_fit(key: &KeyKind, class: u8, cpu: i64) -> bool {
    match key {
        KeyKind::Memory | KeyKind::Cpu => true,
        _ => class >= 63 || (1i64 << class) > cpu,
    }
}

/// An index is for one chain shape over the instances that pass its static memberOf
/// expressions (by their text): the others can never be chosen, so they are left out.
type IndexId = (Option<String>, KeyKind, Vec<String>);

/// Instances of one snapshot with the indices placement has needed so far. It can live as long
/// as the cluster: [`ClusterIndex::upsert`] and [`ClusterIndex::remove`] keep it current as
/// instances change (a server's watch-fed state does), and every answer stays the full scan's
/// over [`ClusterIndex::instances`].
#[derive(Debug)]
pub struct ClusterIndex {
    inst: Vec<Candidate>,
    ranks: Vec<u64>,
    /// Instance ARN → its position in `inst`.
    by_arn: HashMap<String, usize>,
    indices: HashMap<IndexId, OrderedIndex>,
    /// When each index was last used, so that the indices of groups no longer placed are
    /// dropped (every index is updated on every placement).
    last_used: HashMap<IndexId, u64>,
    clock: u64,
    /// `(group, attribute)` → attribute value → tasks of the group there.
    spread_counts: HashMap<String, HashMap<String, HashMap<Option<String>, u64>>>,
    /// Static memberOf expression (by its text) → does each instance match.
    member: HashMap<String, Vec<bool>>,
    /// The expressions behind `member`, to evaluate instances added or changed later.
    member_exprs: HashMap<String, query::Expr>,
    /// How many copies went through the full scan instead (for the benchmark's honesty).
    pub scanned: u64,
}

fn key_of(c: &Candidate, k: &KeyKind) -> u64 {
    match k {
        KeyKind::Rank => 0,
        KeyKind::Memory => c.memory.max(0) as u64,
        KeyKind::Cpu => c.cpu.max(0) as u64,
        KeyKind::Group(g) => u64::from(c.groups.get(g).copied().unwrap_or(0)),
    }
}

fn part_of(c: &Candidate, attr: &Option<String>) -> Option<String> {
    attr.as_ref()
        .and_then(|a| c.attributes.get(a).cloned().flatten())
        .or_else(|| {
            // An attribute present without a value and an absent one are different values.
            attr.as_ref()
                .filter(|a| c.attributes.contains_key(*a))
                .map(|_| String::new())
        })
}

/// The chain shape the index serves: (partition attribute, key), or `None` for the scan.
fn shape(rules: &Rules) -> Option<(Option<String>, KeyKind)> {
    let mut it = rules.strategies.iter().peekable();
    let attr = match it.peek() {
        Some(Strategy::Spread(SpreadField::Attribute(a))) => {
            let a = a.clone();
            it.next();
            Some(a)
        }
        _ => None,
    };
    let key = match it.next() {
        None => KeyKind::Rank,
        Some(Strategy::Binpack(Resource::Memory)) => KeyKind::Memory,
        Some(Strategy::Binpack(Resource::Cpu)) => KeyKind::Cpu,
        Some(Strategy::Spread(SpreadField::Instance)) => KeyKind::Group(rules.group.clone()),
        Some(_) => return None,
    };
    if it.next().is_some() {
        return None;
    }
    for c in &rules.constraints {
        if let Constraint::MemberOf(e) = c {
            if !e.is_static() {
                return None;
            }
        }
    }
    Some((attr, key))
}

impl ClusterIndex {
    pub fn new(instances: Vec<Candidate>) -> Self {
        let ranks = instances.iter().map(|c| crate::rank(&c.arn)).collect();
        let by_arn = instances
            .iter()
            .enumerate()
            .map(|(i, c)| (c.arn.clone(), i))
            .collect();
        ClusterIndex {
            inst: instances,
            ranks,
            by_arn,
            indices: HashMap::new(),
            last_used: HashMap::new(),
            clock: 0,
            spread_counts: HashMap::new(),
            member: HashMap::new(),
            member_exprs: HashMap::new(),
            scanned: 0,
        }
    }

    pub fn instances(&self) -> &[Candidate] {
        &self.inst
    }

    /// Where the instance `arn` is in [`ClusterIndex::instances`].
    pub fn position(&self, arn: &str) -> Option<usize> {
        self.by_arn.get(arn).copied()
    }

    /// Adds the instance, or replaces the one with the same ARN, and re-files it in every
    /// index. Returns its position.
    pub fn upsert(&mut self, c: Candidate) -> usize {
        let i = match self.by_arn.get(&c.arn) {
            Some(&i) => {
                self.file(i, false);
                self.inst[i] = c;
                i
            }
            None => {
                let i = self.inst.len();
                self.by_arn.insert(c.arn.clone(), i);
                self.ranks.push(crate::rank(&c.arn));
                self.inst.push(c);
                for bits in self.member.values_mut() {
                    bits.push(false);
                }
                i
            }
        };
        self.refresh_member_bits(i);
        self.file(i, true);
        i
    }

    /// Removes the instance `arn`; the last instance takes its position.
    pub fn remove(&mut self, arn: &str) -> bool {
        let Some(i) = self.by_arn.remove(arn) else {
            return false;
        };
        self.file(i, false);
        let last = self.inst.len() - 1;
        if i != last {
            self.file(last, false);
        }
        self.inst.swap_remove(i);
        self.ranks.swap_remove(i);
        for bits in self.member.values_mut() {
            bits.swap_remove(i);
        }
        if i != last {
            self.by_arn.insert(self.inst[i].arn.clone(), i);
            self.file(i, true);
        }
        true
    }

    /// Takes one copy of `d` (of `group`) from instance `i`, as a placement there would: for
    /// placements decided elsewhere (StartTask's named instances, a DAEMON's one per instance).
    pub fn take(&mut self, i: usize, d: &Demand, group: &str) {
        self.commit(i, d, group);
    }

    fn refresh_member_bits(&mut self, i: usize) {
        let c = &self.inst[i];
        for (text, bits) in self.member.iter_mut() {
            bits[i] = self.member_exprs.get(text).is_some_and(|e| e.matches(c));
        }
    }

    /// Files instance `i` into (`add`) or out of every index it belongs to and the spread
    /// counts of the groups it holds, under its current candidate.
    fn file(&mut self, i: usize, add: bool) {
        let c = &self.inst[i];
        let rank = self.ranks[i];
        for (id, idx) in self.indices.iter_mut() {
            let (attr, key, members) = id;
            if !members
                .iter()
                .all(|m| self.member.get(m).is_some_and(|b| b[i]))
            {
                continue;
            }
            let part = (part_of(c, attr), cpu_class(key, c));
            let entry = (key_of(c, key), rank, i as u32);
            if add {
                idx.parts.entry(part).or_default().insert(entry);
            } else if let Some(set) = idx.parts.get_mut(&part) {
                set.remove(&entry);
            }
        }
        for (g, n) in &c.groups {
            let Some(by_attr) = self.spread_counts.get_mut(g) else {
                continue;
            };
            for (a, counts) in by_attr.iter_mut() {
                let v = counts.entry(part_of(c, &Some(a.clone()))).or_default();
                *v = if add {
                    *v + u64::from(*n)
                } else {
                    v.saturating_sub(u64::from(*n))
                };
            }
        }
    }

    fn ensure_index(&mut self, id: &IndexId) {
        self.clock += 1;
        self.last_used.insert(id.clone(), self.clock);
        if self.indices.contains_key(id) {
            return;
        }
        if self.indices.len() >= MAX_INDICES {
            if let Some(oldest) = self
                .last_used
                .iter()
                .filter(|(k, _)| *k != id)
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
            {
                self.indices.remove(&oldest);
                self.last_used.remove(&oldest);
            }
        }
        let (attr, key, members) = id;
        let bits: Vec<&Vec<bool>> = members.iter().map(|m| &self.member[m]).collect();
        let mut idx = OrderedIndex::default();
        for (i, c) in self.inst.iter().enumerate() {
            if !bits.iter().all(|b| b[i]) {
                continue;
            }
            idx.parts
                .entry((part_of(c, attr), cpu_class(key, c)))
                .or_default()
                .insert((key_of(c, key), self.ranks[i], i as u32));
        }
        self.indices.insert(id.clone(), idx);
    }

    fn ensure_spread_counts(&mut self, group: &str, attr: &str) {
        if self
            .spread_counts
            .get(group)
            .is_some_and(|m| m.contains_key(attr))
        {
            return;
        }
        let mut m: HashMap<Option<String>, u64> = HashMap::new();
        let a = Some(attr.to_string());
        for c in &self.inst {
            *m.entry(part_of(c, &a)).or_default() +=
                u64::from(c.groups.get(group).copied().unwrap_or(0));
        }
        self.spread_counts
            .entry(group.to_string())
            .or_default()
            .insert(attr.to_string(), m);
    }

    fn ensure_member(&mut self, e: &query::Expr) -> String {
        let text = format!("{e:?}");
        if !self.member.contains_key(&text) {
            let bits = self.inst.iter().map(|c| e.matches(c)).collect();
            self.member.insert(text.clone(), bits);
            self.member_exprs.insert(text.clone(), e.clone());
        }
        text
    }

    /// Places `count` copies, exactly as [`crate::place`] would over these instances.
    pub fn place(&mut self, d: &Demand, rules: &Rules, count: usize) -> Placement {
        self.place_avoiding(d, rules, count, &HashSet::new())
    }

    /// Places `count` copies on instances other than those at the positions in `avoid`
    /// (instances another placement is committing to), as [`crate::place`] would with those
    /// instances unable to take anything; they still count in spreads over an attribute.
    /// Failures name the avoided instances as INACTIVE.
    pub fn place_avoiding(
        &mut self,
        d: &Demand,
        rules: &Rules,
        count: usize,
        avoid: &HashSet<usize>,
    ) -> Placement {
        let Some((attr, key)) = shape(rules) else {
            self.scanned += count as u64;
            return self.place_by_scan(d, rules, count, avoid);
        };
        if let Some(a) = &attr {
            self.ensure_spread_counts(&rules.group, a);
        }
        let mut members: Vec<String> = rules
            .constraints
            .iter()
            .filter_map(|c| match c {
                Constraint::MemberOf(e) => Some(self.ensure_member(e)),
                Constraint::DistinctInstance => None,
            })
            .collect();
        members.sort();
        members.dedup();
        let distinct = rules
            .constraints
            .iter()
            .any(|c| matches!(c, Constraint::DistinctInstance));
        let id: IndexId = (attr, key, members);
        self.ensure_index(&id);
        let mut out = Placement::default();
        for _ in 0..count {
            let Some(chosen) = self.choose(d, rules, &id, distinct, avoid) else {
                out.failures = self
                    .inst
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| match avoid.contains(&i) {
                        true => Some((i, Reason::Inactive)),
                        false => rejects(c, d, rules).map(|r| (i, r)),
                    })
                    .collect::<Vec<(usize, Reason)>>();
                break;
            };
            self.commit(chosen, d, &rules.group);
            out.placed.push(chosen);
        }
        out
    }

    /// Resources, ports, attributes and distinctInstance; the index holds only members.
    fn feasible(&self, i: usize, d: &Demand, group: &str, distinct: bool) -> bool {
        let c = &self.inst[i];
        crate::misfit(c, d).is_none() && !(distinct && c.groups.get(group).is_some_and(|n| *n > 0))
    }

    fn choose(
        &self,
        d: &Demand,
        rules: &Rules,
        id: &IndexId,
        distinct: bool,
        avoid: &HashSet<usize>,
    ) -> Option<usize> {
        let (attr, key, _) = id;
        let idx = &self.indices[id];
        let lower = match key {
            KeyKind::Memory => d.memory.max(0) as u64,
            KeyKind::Cpu => d.cpu.max(0) as u64,
            _ => 0,
        };
        let counts = attr.as_ref().map(|a| &self.spread_counts[&rules.group][a]);
        // (spread count, key, rank, instance) of each partition's best feasible instance.
        let mut best: Option<(u64, Entry)> = None;
        for ((part, class), set) in &idx.parts {
            if !class_may_fit(key, *class, d.cpu) {
                continue;
            }
            let spread = counts.and_then(|m| m.get(part)).copied().unwrap_or(0);
            if best.is_some_and(|(s, _)| s < spread) {
                continue;
            }
            let hit = set.range((lower, 0, 0)..).find(|e| {
                !avoid.contains(&(e.2 as usize))
                    && self.feasible(e.2 as usize, d, &rules.group, distinct)
            });
            if let Some(e) = hit {
                let cand = (spread, *e);
                if best.is_none_or(|b| cand < b) {
                    best = Some(cand);
                }
            }
        }
        best.map(|(_, e)| e.2 as usize)
    }

    /// Takes the copy's resources from instance `i` and moves it in the indices it is in.
    fn commit(&mut self, i: usize, d: &Demand, group: &str) {
        let c = &mut self.inst[i];
        let (old_cpu, old_memory) = (c.cpu, c.memory);
        let old_count = u64::from(c.groups.get(group).copied().unwrap_or(0));
        take(c, d);
        *c.groups.entry(group.to_string()).or_default() += 1;
        c.running_tasks_count += 1;
        let (inst, rank) = (&self.inst[i], self.ranks[i]);
        let class_of = |key: &KeyKind, cpu: i64| match key {
            KeyKind::Memory | KeyKind::Cpu => 0,
            _ => (64 - (cpu.max(0) as u64).leading_zeros()) as u8,
        };
        for (id, idx) in self.indices.iter_mut() {
            let key = &id.1;
            let old_key = match key {
                KeyKind::Rank => 0,
                KeyKind::Memory => old_memory.max(0) as u64,
                KeyKind::Cpu => old_cpu.max(0) as u64,
                KeyKind::Group(g) if g == group => old_count,
                KeyKind::Group(_) => key_of(inst, key),
            };
            let (from, to) = (class_of(key, old_cpu), class_of(key, inst.cpu));
            let new_key = key_of(inst, key);
            if old_key == new_key && from == to {
                continue;
            }
            let part = part_of(inst, &id.0);
            // Only indices the instance is in (it may not be a member of them all).
            let removed = idx
                .parts
                .get_mut(&(part.clone(), from))
                .is_some_and(|set| set.remove(&(old_key, rank, i as u32)));
            if removed {
                idx.parts
                    .entry((part, to))
                    .or_default()
                    .insert((new_key, rank, i as u32));
            }
        }
        if let Some(by_attr) = self.spread_counts.get_mut(group) {
            for (a, counts) in by_attr.iter_mut() {
                *counts.entry(part_of(inst, &Some(a.clone()))).or_default() += 1;
            }
        }
    }

    /// The full scan over the index's instances, keeping the indices current.
    fn place_by_scan(
        &mut self,
        d: &Demand,
        rules: &Rules,
        count: usize,
        avoid: &HashSet<usize>,
    ) -> Placement {
        let mut scratch = self.inst.clone();
        for &i in avoid {
            if let Some(c) = scratch.get_mut(i) {
                c.active = false;
            }
        }
        let p = crate::place(&mut scratch, d, rules, count);
        for &i in &p.placed {
            self.commit(i, d, &rules.group);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, proptest};
    use std::collections::BTreeMap;

    fn cluster(spec: &[(i64, i64, usize, bool)]) -> Vec<Candidate> {
        spec.iter()
            .enumerate()
            .map(|(i, (cpu, mem, zone, big))| {
                let mut attributes = BTreeMap::new();
                attributes.insert(
                    "ecs.availability-zone".to_string(),
                    Some(["a", "b", "c", "d"][*zone].to_string()),
                );
                attributes.insert(
                    "ecs.instance-type".to_string(),
                    Some(if *big { "m5.large" } else { "t3.small" }.to_string()),
                );
                Candidate {
                    arn: format!("arn:aws:ecs:r:1:container-instance/c/{i}"),
                    active: true,
                    agent_connected: true,
                    cpu: *cpu,
                    memory: *mem,
                    attributes,
                    ..Default::default()
                }
            })
            .collect()
    }

    /// The strategy chains the property tests place with, by number (0-5): every shape the
    /// index serves.
    fn chain_of(n: usize) -> Vec<Strategy> {
        let az = || Strategy::Spread(SpreadField::Attribute("ecs.availability-zone".into()));
        match n {
            0 => vec![],
            1 => vec![Strategy::Binpack(Resource::Memory)],
            2 => vec![az(), Strategy::Binpack(Resource::Memory)],
            3 => vec![Strategy::Spread(SpreadField::Instance)],
            4 => vec![az(), Strategy::Binpack(Resource::Cpu)],
            _ => vec![az()],
        }
    }

    /// The rules the property tests place with: group `g`, a fixed seed, and optionally
    /// `distinctInstance` and a static `memberOf`.
    fn rules(strategies: Vec<Strategy>, distinct: bool, member: bool) -> Rules {
        let mut rules = Rules {
            strategies,
            group: "g".into(),
            seed: 1,
            ..Default::default()
        };
        if distinct {
            rules.constraints.push(Constraint::DistinctInstance);
        }
        if member {
            rules.constraints.push(Constraint::MemberOf(
                query::parse("attribute:ecs.instance-type == m5.large").unwrap(),
            ));
        }
        rules
    }

    proptest! {
        /// The index and the full scan agree on every copy, whatever the chain it serves.
        #[test]
        fn the_index_places_exactly_as_the_full_scan(
            spec in prop::collection::vec((0i64..4096, 0i64..8192, 0usize..4, any::<bool>()), 1..30),
            chain in 0usize..6,
            distinct in any::<bool>(),
            member in any::<bool>(),
            demands in prop::collection::vec((0i64..1024, 1i64..2048, 1usize..12), 1..10),
        ) {
            let rules = rules(chain_of(chain), distinct, member);
            let mut scan = cluster(&spec);
            let mut index = ClusterIndex::new(cluster(&spec));
            for (cpu, memory, count) in demands {
                let d = Demand { cpu, memory, ..Default::default() };
                let want = crate::place(&mut scan, &d, &rules, count);
                let got = index.place(&d, &rules, count);
                prop_assert_eq!(&got, &want);
            }
            prop_assert_eq!(index.scanned, 0);
            prop_assert_eq!(index.instances(), &scan[..]);
        }

        /// Placing around some instances (others are committing to them) never picks one of
        /// them, and picks what the full scan picks with them unable to take anything.
        #[test]
        fn placing_around_instances_places_as_the_scan_without_them(
            spec in prop::collection::vec((0i64..4096, 0i64..8192, 0usize..4, any::<bool>()), 1..30),
            chain in 0usize..6,
            distinct in any::<bool>(),
            avoided in prop::collection::vec(any::<bool>(), 30),
            demands in prop::collection::vec((0i64..1024, 1i64..2048, 1usize..12), 1..10),
        ) {
            let rules = rules(chain_of(chain), distinct, false);
            let avoid: HashSet<usize> = (0..spec.len()).filter(|&i| avoided[i]).collect();
            let mut index = ClusterIndex::new(cluster(&spec));
            for (cpu, memory, count) in demands {
                let d = Demand { cpu, memory, ..Default::default() };
                let mut scan = index.instances().to_vec();
                for &i in &avoid {
                    scan[i].active = false;
                }
                let want = crate::place(&mut scan, &d, &rules, count);
                let got = index.place_avoiding(&d, &rules, count, &avoid);
                prop_assert!(got.placed.iter().all(|i| !avoid.contains(i)), "placed on an avoided instance: {:?}", got.placed);
                prop_assert_eq!(&got.placed, &want.placed);
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Change {
        /// Instance k (of 12) with these resources, zone, type, and tasks of group g.
        Upsert(usize, i64, i64, usize, bool, u32),
        Remove(usize),
        Place(i64, i64, usize),
    }

    fn change() -> impl proptest::strategy::Strategy<Value = Change> {
        use proptest::prelude::*;
        prop_oneof![
            (
                0usize..12,
                0i64..4096,
                0i64..8192,
                0usize..4,
                any::<bool>(),
                0u32..3
            )
                .prop_map(|(k, c, m, z, b, g)| Change::Upsert(k, c, m, z, b, g)),
            (0usize..12).prop_map(Change::Remove),
            (0i64..1024, 1i64..2048, 1usize..6).prop_map(|(c, m, n)| Change::Place(c, m, n)),
        ]
    }

    proptest! {
        /// An index kept for a cluster's life, with instances joining, changing and leaving
        /// between placements, answers exactly as the full scan over its instances.
        #[test]
        fn a_long_lived_index_stays_exact_through_changes(
            changes in prop::collection::vec(change(), 1..60),
            chain in 0usize..6,
            distinct in any::<bool>(),
            member in any::<bool>(),
        ) {
            let az = || Strategy::Spread(SpreadField::Attribute("ecs.availability-zone".into()));
            let strategies = match chain {
                0 => vec![],
                1 => vec![Strategy::Binpack(Resource::Memory)],
                2 => vec![az(), Strategy::Binpack(Resource::Memory)],
                3 => vec![Strategy::Spread(SpreadField::Instance)],
                4 => vec![az(), Strategy::Spread(SpreadField::Instance)],
                _ => vec![az()],
            };
            let rules = rules(strategies, distinct, member);
            let mut index = ClusterIndex::new(Vec::new());
            for ch in changes {
                match ch {
                    Change::Upsert(k, cpu, memory, zone, big, tasks) => {
                        let mut c = cluster(&[(cpu, memory, zone, big)]).remove(0);
                        c.arn = format!("arn:aws:ecs:r:1:container-instance/c/{k}");
                        if tasks > 0 {
                            c.groups.insert("g".into(), tasks);
                        }
                        index.upsert(c);
                    }
                    Change::Remove(k) => {
                        index.remove(&format!("arn:aws:ecs:r:1:container-instance/c/{k}"));
                    }
                    Change::Place(cpu, memory, count) => {
                        let d = Demand { cpu, memory, ..Default::default() };
                        let mut scan = index.instances().to_vec();
                        let want = crate::place(&mut scan, &d, &rules, count);
                        let got = index.place(&d, &rules, count);
                        prop_assert_eq!(&got, &want);
                        prop_assert_eq!(index.instances(), &scan[..]);
                    }
                }
                for (i, c) in index.instances().iter().enumerate() {
                    prop_assert_eq!(index.position(&c.arn), Some(i));
                }
            }
            prop_assert_eq!(index.scanned, 0);
        }
    }

    #[test]
    fn unsupported_chains_fall_back_to_the_scan_and_stay_exact() {
        let spec = [
            (4096, 4096, 0, true),
            (4096, 2048, 1, false),
            (1024, 1024, 2, true),
        ];
        let rules = Rules {
            strategies: vec![Strategy::Random, Strategy::Binpack(Resource::Memory)],
            group: "g".into(),
            seed: 9,
            ..Default::default()
        };
        let d = Demand {
            cpu: 128,
            memory: 256,
            ..Default::default()
        };
        let mut scan = cluster(&spec);
        let mut index = ClusterIndex::new(cluster(&spec));
        for _ in 0..5 {
            let want = crate::place(&mut scan, &d, &rules, 3);
            assert_eq!(index.place(&d, &rules, 3), want);
        }
        assert_eq!(index.scanned, 15);
    }
}
