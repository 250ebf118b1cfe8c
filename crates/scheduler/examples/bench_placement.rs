//! `bench/run placement`: 1,000,000 tasks onto a simulated cluster of 10,000 instances over 5
//! availability zones (five instance types, two stacks), with the indexed engine, under
//! (a) binpack memory; (b) spread attribute:ecs.availability-zone then binpack memory;
//! (c) memberOf(attribute:ecs.instance-type =~ m5.*) then spread instanceId — each as RunTask
//! calls of 10 (one group) and as groups of 1,000 (a thousand groups). Every decision is timed
//! on its own. The full scan (`berth_scheduler::place`) replays the first decisions of each
//! scenario on the same cluster: its rate is reported and its choices must equal the index's.
//! Last line: `placement: a_pps=N b_pps=N c_pps=N fullscan_pps=N p99_us=N rss_mib=N`.
#![allow(clippy::unwrap_used)]

use berth_scheduler::index::ClusterIndex;
use berth_scheduler::{
    query, Candidate, Constraint, Demand, Resource, Rules, SpreadField, Strategy,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

const INSTANCES: usize = 10_000;
const TASKS: usize = 1_000_000;
const ZONES: usize = 5;
/// Decisions the full scan replays per scenario.
const SCAN_SAMPLE: usize = 300;

const TYPES: [(&str, i64, i64); 5] = [
    ("m5.large", 2048, 8192),
    ("m5.xlarge", 4096, 16384),
    ("c5.2xlarge", 8192, 16384),
    ("r5.2xlarge", 8192, 65536),
    ("m5.4xlarge", 16384, 65536),
];

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn cluster() -> Vec<Candidate> {
    (0..INSTANCES)
        .map(|i| {
            let r = splitmix(i as u64);
            let (itype, cpu, memory) = TYPES[(r % 5) as usize];
            let mut attributes = BTreeMap::new();
            attributes.insert(
                "ecs.availability-zone".to_string(),
                Some(format!("us-east-1{}", (b'a' + (i % ZONES) as u8) as char)),
            );
            attributes.insert("ecs.instance-type".to_string(), Some(itype.to_string()));
            attributes.insert("ecs.os-type".to_string(), Some("linux".to_string()));
            attributes.insert(
                "stack".to_string(),
                Some(if r >> 32 & 1 == 0 { "prod" } else { "dev" }.to_string()),
            );
            Candidate {
                arn: format!("arn:aws:ecs:us-east-1:000000000000:container-instance/sim/{i:032x}"),
                ec2_instance_id: format!("i-{i:017x}"),
                active: true,
                agent_connected: true,
                cpu,
                memory,
                ports_used: [22, 2375, 2376, 51678, 51679].into(),
                attributes,
                ..Default::default()
            }
        })
        .collect()
}

/// The n-th task's needs: small services, 32 CPU units and 128 MiB on average.
fn demand(n: usize) -> Demand {
    let (cpu, memory) = [(16, 64), (32, 128), (64, 256), (32, 128), (16, 64)][n % 5];
    Demand {
        cpu,
        memory,
        ..Default::default()
    }
}

fn rules(scenario: char, group: String) -> Rules {
    let az = Strategy::Spread(SpreadField::Attribute("ecs.availability-zone".into()));
    let (constraints, strategies) = match scenario {
        'a' => (vec![], vec![Strategy::Binpack(Resource::Memory)]),
        'b' => (vec![], vec![az, Strategy::Binpack(Resource::Memory)]),
        _ => (
            vec![Constraint::MemberOf(
                query::parse("attribute:ecs.instance-type =~ m5.*").unwrap(),
            )],
            vec![Strategy::Spread(SpreadField::Instance)],
        ),
    };
    Rules {
        constraints,
        strategies,
        group,
        seed: 42,
    }
}

/// The group of the n-th task in a mode.
fn group(groups_of_1000: bool, n: usize) -> String {
    if groups_of_1000 {
        format!("service:svc{}", n / 1000)
    } else {
        "family:web".to_string()
    }
}

struct Run {
    pps: f64,
    p99_us: f64,
    placed: usize,
    used: usize,
    zone_spread: usize,
}

fn run(scenario: char, groups_of_1000: bool) -> Run {
    let mut index = ClusterIndex::new(cluster());
    let mut lat = Vec::with_capacity(TASKS);
    let mut placed = 0;
    let started = Instant::now();
    // RunTask calls of 10, or groups of 1,000: one decision at a time either way, timed alone.
    let per_call = if groups_of_1000 { 1000 } else { 10 };
    let mut r = rules(scenario, group(groups_of_1000, 0));
    for n in 0..TASKS {
        // One request's rules serve its copies: a call of 10, or a group of 1,000.
        if n % per_call == 0 {
            r = rules(scenario, group(groups_of_1000, n));
        }
        let d = demand(n);
        let t0 = Instant::now();
        let p = index.place(&d, &r, 1);
        lat.push(t0.elapsed().as_nanos() as u64);
        placed += p.placed.len();
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(index.scanned, 0, "every decision went through the index");
    lat.sort_unstable();
    let used = index
        .instances()
        .iter()
        .filter(|c| c.running_tasks_count > 0)
        .count();
    let mut per_zone: BTreeMap<String, u64> = BTreeMap::new();
    for c in index.instances() {
        *per_zone
            .entry(c.attributes["ecs.availability-zone"].clone().unwrap())
            .or_default() += c.running_tasks_count;
    }
    let zone_spread =
        (per_zone.values().max().unwrap() - per_zone.values().min().unwrap()) as usize;
    Run {
        pps: TASKS as f64 / secs,
        p99_us: lat[lat.len() * 99 / 100] as f64 / 1000.0,
        placed,
        used,
        zone_spread,
    }
}

/// The full scan replays the first decisions of a scenario; it must choose what the index
/// chose. Returns its decisions per second.
fn check_against_scan(scenario: char) -> (f64, f64) {
    let mut index = ClusterIndex::new(cluster());
    let mut scan = cluster();
    let mut scan_secs = 0.0;
    let mut lat = Vec::with_capacity(SCAN_SAMPLE);
    for n in 0..SCAN_SAMPLE {
        let r = rules(scenario, group(false, n));
        let d = demand(n);
        let t0 = Instant::now();
        let want = berth_scheduler::place(&mut scan, &d, &r, 1);
        let took = t0.elapsed().as_secs_f64();
        scan_secs += took;
        lat.push(took * 1e6);
        let got = index.place(&d, &r, 1);
        assert_eq!(
            got, want,
            "scenario {scenario}, decision {n}: index and full scan differ"
        );
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    (SCAN_SAMPLE as f64 / scan_secs, lat[lat.len() * 99 / 100])
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

/// Binpack against random on the same workload: how many instances each needs.
fn binpack_vs_random() -> (usize, usize) {
    let hosts: Vec<Candidate> = cluster().into_iter().take(1000).collect();
    let used = |s: Strategy| {
        let mut c = hosts.clone();
        let r = Rules {
            strategies: vec![s],
            group: "family:web".into(),
            seed: 7,
            ..Default::default()
        };
        let mut on = BTreeSet::new();
        for n in 0..20_000 {
            // A RunTask call of one: each call has its own seed, as the server gives it.
            let r = Rules {
                seed: n as u64,
                ..r.clone()
            };
            on.extend(berth_scheduler::place(&mut c, &demand(n), &r, 1).placed);
        }
        on.len()
    };
    (
        used(Strategy::Binpack(Resource::Memory)),
        used(Strategy::Random),
    )
}

fn main() {
    let mut pps = BTreeMap::new();
    let mut p99: f64 = 0.0;
    for scenario in ['a', 'b', 'c'] {
        for groups in [false, true] {
            let r = run(scenario, groups);
            println!(
                "scenario {scenario} ({}): {:.0} placements/s, p99 {:.1} us, {} of {TASKS} placed, {} instances used, zone max-min {}",
                if groups { "groups of 1000" } else { "RunTask calls of 10" },
                r.pps,
                r.p99_us,
                r.placed,
                r.used,
                r.zone_spread
            );
            assert_eq!(
                r.placed, TASKS,
                "the simulated cluster holds the whole workload"
            );
            p99 = p99.max(r.p99_us);
            let e = pps.entry(scenario).or_insert(f64::MAX);
            *e = e.min(r.pps);
        }
    }
    let mut scan_pps = f64::MAX;
    for scenario in ['a', 'b', 'c'] {
        let (s, p99) = check_against_scan(scenario);
        println!("full scan, scenario {scenario}: {s:.0} placements/s, p99 {p99:.0} us over {SCAN_SAMPLE} decisions, identical choices");
        scan_pps = scan_pps.min(s);
    }
    let (binpack, random) = binpack_vs_random();
    println!(
        "20,000 tasks on 1,000 instances: binpack memory used {binpack} instances, random {random}"
    );
    println!(
        "instances={INSTANCES} tasks={TASKS} zones={ZONES} single thread; pps is the slower of the two modes"
    );
    println!(
        "placement: a_pps={:.0} b_pps={:.0} c_pps={:.0} fullscan_pps={scan_pps:.0} p99_us={p99:.1} rss_mib={}",
        pps[&'a'],
        pps[&'b'],
        pps[&'c'],
        rss_mib()
    );
}
