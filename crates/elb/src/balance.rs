//! Choosing where a request goes: which of a forward action's groups ([`pick_group`]) and
//! which of a group's targets ([`pick`]), by ELB's rules — draining targets get nothing new,
//! healthy targets are preferred, and when none is healthy every other target is tried
//! ("fail open").
//!
//! Pure: the caller passes `now` and a `ticket`, a counter it increments once per choice,
//! which makes every choice deterministic and testable.

use std::time::Duration;

use crate::config::Algorithm;

/// The smallest share, relative to a full one, of a target just entering slow start.
const MIN_WARMUP_WEIGHT: f64 = 0.1;

/// One target as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The target's position in its group's `targets`; what [`pick`] returns.
    pub index: usize,
    /// Whether its health checks say healthy.
    pub healthy: bool,
    /// Requests sent to it and not yet answered.
    pub in_flight: usize,
    /// When it last became healthy, seconds since the epoch (for slow start).
    pub healthy_since: Option<f64>,
    /// Deregistered and draining: never gets a new request.
    pub draining: bool,
}

/// The targets that may take a new request, as [`Candidate::index`] values in `cands`'
/// order: the healthy non-draining ones, or, if none is healthy, every non-draining one.
pub fn eligible(cands: &[Candidate]) -> Vec<usize> {
    eligible_positions(cands)
        .into_iter()
        .filter_map(|pos| cands.get(pos).map(|cand| cand.index))
        .collect()
}

/// Like [`eligible`], as positions in `cands`.
fn eligible_positions(cands: &[Candidate]) -> Vec<usize> {
    let live = |healthy_only: bool| -> Vec<usize> {
        cands
            .iter()
            .enumerate()
            .filter(|(_, cand)| !cand.draining && (cand.healthy || !healthy_only))
            .map(|(pos, _)| pos)
            .collect()
    };
    let healthy = live(true);
    if healthy.is_empty() {
        live(false)
    } else {
        healthy
    }
}

/// The target (its [`Candidate::index`]) for the next request, or `None` if every target is
/// draining or there are none.
///
/// Round robin takes eligible target `ticket % count`. With `slow_start`, a target healthy
/// for less than `slow_start` gets a share of `elapsed / slow_start` (at least
/// 0.1) of a full one: the choice is then weighted, from a hash of
/// `ticket`; when no target is warming up it is plain round robin. Least outstanding
/// requests takes the eligible target with the fewest requests in flight, ties rotated by
/// `ticket`; it ignores slow start (ELB does not allow the two together).
pub fn pick(
    algorithm: Algorithm,
    cands: &[Candidate],
    slow_start: Duration,
    now: f64,
    ticket: u64,
) -> Option<usize> {
    let pool = eligible_positions(cands);
    let pos = match algorithm {
        Algorithm::RoundRobin => round_robin(cands, &pool, slow_start, now, ticket),
        Algorithm::LeastOutstandingRequests => least_outstanding(cands, &pool, ticket),
    }?;
    cands.get(pos).map(|cand| cand.index)
}

/// The forward group (its position in `groups`) for the next request: `ticket` modulo the
/// total weight, walked along the cumulative weights, so over any run of consecutive
/// tickets as long as the total each group gets exactly its weight. Groups of weight 0 get
/// nothing; `None` if all weigh 0 (or there are none).
pub fn pick_group(groups: &[(String, u32)], ticket: u64) -> Option<usize> {
    let total: u64 = groups.iter().map(|(_, weight)| u64::from(*weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = ticket % total;
    for (pos, (_, weight)) in groups.iter().enumerate() {
        let weight = u64::from(*weight);
        if point < weight {
            return Some(pos);
        }
        point -= weight;
    }
    None
}

/// Entry `ticket % len` of `pool`.
fn rotate(pool: &[usize], ticket: u64) -> Option<usize> {
    let len = u64::try_from(pool.len()).ok().filter(|len| *len > 0)?;
    let at = usize::try_from(ticket % len).ok()?;
    pool.get(at).copied()
}

fn round_robin(
    cands: &[Candidate],
    pool: &[usize],
    slow_start: Duration,
    now: f64,
    ticket: u64,
) -> Option<usize> {
    let weights: Vec<f64> = pool
        .iter()
        .map(|&pos| {
            cands
                .get(pos)
                .map_or(1.0, |cand| warmup_weight(cand, slow_start, now))
        })
        .collect();
    if weights.iter().all(|&weight| weight >= 1.0) {
        return rotate(pool, ticket);
    }
    let total: f64 = weights.iter().sum();
    let mut point = unit_fraction(splitmix64(ticket)) * total;
    for (&pos, &weight) in pool.iter().zip(&weights) {
        if point < weight {
            return Some(pos);
        }
        point -= weight;
    }
    // Rounding left `point` just past the last weight.
    pool.last().copied()
}

fn least_outstanding(cands: &[Candidate], pool: &[usize], ticket: u64) -> Option<usize> {
    let load = |pos: usize| cands.get(pos).map_or(usize::MAX, |cand| cand.in_flight);
    let fewest = pool.iter().map(|&pos| load(pos)).min()?;
    let idlest: Vec<usize> = pool
        .iter()
        .copied()
        .filter(|&pos| load(pos) == fewest)
        .collect();
    rotate(&idlest, ticket)
}

/// A target's share relative to a full one: 1 unless it is healthy and became so less than
/// `slow_start` before `now`, then `elapsed / slow_start`, at least [`MIN_WARMUP_WEIGHT`].
fn warmup_weight(cand: &Candidate, slow_start: Duration, now: f64) -> f64 {
    let window = slow_start.as_secs_f64();
    match cand.healthy_since {
        Some(since) if cand.healthy && window > 0.0 => {
            let elapsed = now - since;
            if elapsed >= window {
                1.0
            } else {
                (elapsed / window).max(MIN_WARMUP_WEIGHT)
            }
        }
        _ => 1.0,
    }
}

/// SplitMix64's output function: consecutive tickets give well-spread, deterministic bits.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The top 53 bits of `bits` as a fraction in `[0, 1)`.
fn unit_fraction(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(index: usize) -> Candidate {
        Candidate {
            index,
            healthy: true,
            in_flight: 0,
            healthy_since: Some(0.0),
            draining: false,
        }
    }

    /// How many of `tickets` consecutive picks (from 0) went to each index below `targets`.
    fn tally(
        algorithm: Algorithm,
        cands: &[Candidate],
        slow_start: Duration,
        now: f64,
        tickets: u64,
        targets: usize,
    ) -> Vec<usize> {
        let mut counts = vec![0; targets];
        for ticket in 0..tickets {
            let index = pick(algorithm, cands, slow_start, now, ticket).expect("a target");
            counts[index] += 1;
        }
        counts
    }

    #[test]
    fn eligible_prefers_healthy_and_never_draining() {
        let mut cands = [cand(0), cand(1), cand(2), cand(3)];
        cands[1].healthy = false;
        cands[2].draining = true;
        assert_eq!(
            eligible(&cands),
            vec![0, 3],
            "healthy, non-draining targets only"
        );
    }

    #[test]
    fn eligible_fails_open_to_all_non_draining_when_none_is_healthy() {
        let mut cands = [cand(0), cand(1), cand(2)];
        for c in &mut cands {
            c.healthy = false;
        }
        cands[1].draining = true;
        assert_eq!(
            eligible(&cands),
            vec![0, 2],
            "all unhealthy: every non-draining target"
        );
        cands[0].draining = true;
        cands[2].draining = true;
        assert!(eligible(&cands).is_empty(), "all draining: nothing");
        assert!(eligible(&[]).is_empty(), "no targets: nothing");
    }

    #[test]
    fn eligible_returns_candidate_indexes_not_positions() {
        let cands = [cand(7), cand(3)];
        assert_eq!(
            eligible(&cands),
            vec![7, 3],
            "Candidate::index values in order"
        );
        assert_eq!(
            pick(Algorithm::RoundRobin, &cands, Duration::ZERO, 0.0, 1),
            Some(3),
            "pick returns Candidate::index"
        );
    }

    #[test]
    fn round_robin_visits_every_eligible_target_equally() {
        let mut cands = [cand(0), cand(1), cand(2), cand(3), cand(4)];
        cands[1].draining = true;
        cands[3].healthy = false;
        let counts = tally(Algorithm::RoundRobin, &cands, Duration::ZERO, 0.0, 300, 5);
        assert_eq!(
            counts,
            vec![100, 0, 100, 0, 100],
            "even split over healthy targets"
        );
        let order: Vec<Option<usize>> = (0..4)
            .map(|t| pick(Algorithm::RoundRobin, &cands, Duration::ZERO, 0.0, t))
            .collect();
        assert_eq!(
            order,
            vec![Some(0), Some(2), Some(4), Some(0)],
            "ticket order rotates"
        );
    }

    #[test]
    fn draining_targets_are_never_picked() {
        let mut cands = [cand(0), cand(1)];
        cands[0].draining = true;
        cands[0].in_flight = 0;
        cands[1].in_flight = 50;
        for algorithm in [Algorithm::RoundRobin, Algorithm::LeastOutstandingRequests] {
            let counts = tally(algorithm, &cands, Duration::ZERO, 0.0, 20, 2);
            assert_eq!(
                counts,
                vec![0, 20],
                "{algorithm:?} picked a draining target"
            );
        }
        cands[1].draining = true;
        assert_eq!(
            pick(Algorithm::RoundRobin, &cands, Duration::ZERO, 0.0, 0),
            None,
            "all draining: no target"
        );
        assert_eq!(
            pick(
                Algorithm::LeastOutstandingRequests,
                &[],
                Duration::ZERO,
                0.0,
                0
            ),
            None,
            "no targets: no target"
        );
    }

    #[test]
    fn all_unhealthy_fails_open_evenly() {
        let mut cands = [cand(0), cand(1), cand(2)];
        for c in &mut cands {
            c.healthy = false;
            c.healthy_since = None;
        }
        let counts = tally(
            Algorithm::RoundRobin,
            &cands,
            Duration::from_secs(60),
            0.0,
            30,
            3,
        );
        assert_eq!(
            counts,
            vec![10, 10, 10],
            "unhealthy targets share evenly when none is healthy"
        );
    }

    #[test]
    fn least_outstanding_prefers_the_idlest() {
        let mut cands = [cand(0), cand(1), cand(2)];
        cands[0].in_flight = 5;
        cands[1].in_flight = 1;
        cands[2].in_flight = 3;
        let counts = tally(
            Algorithm::LeastOutstandingRequests,
            &cands,
            Duration::ZERO,
            0.0,
            10,
            3,
        );
        assert_eq!(counts, vec![0, 10, 0], "target 1 has the fewest in flight");
    }

    #[test]
    fn least_outstanding_rotates_ties() {
        let mut cands = [cand(0), cand(1), cand(2)];
        cands[1].in_flight = 4;
        let counts = tally(
            Algorithm::LeastOutstandingRequests,
            &cands,
            Duration::ZERO,
            0.0,
            100,
            3,
        );
        assert_eq!(counts, vec![50, 0, 50], "the two idle targets alternate");
    }

    #[test]
    fn least_outstanding_prefers_healthy_even_if_busier() {
        let mut cands = [cand(0), cand(1)];
        cands[0].healthy = false;
        cands[1].in_flight = 9;
        let counts = tally(
            Algorithm::LeastOutstandingRequests,
            &cands,
            Duration::ZERO,
            0.0,
            10,
            2,
        );
        assert_eq!(
            counts,
            vec![0, 10],
            "an idle unhealthy target must not win over a healthy one"
        );
    }

    #[test]
    fn pick_group_splits_three_to_one_exactly() {
        let groups = vec![("a".to_owned(), 3), ("b".to_owned(), 1)];
        let mut counts = [0; 2];
        for ticket in 0..400 {
            counts[pick_group(&groups, ticket).expect("a group")] += 1;
        }
        assert_eq!(counts, [300, 100], "3:1 weights over 400 tickets");
    }

    #[test]
    fn pick_group_never_picks_weight_zero() {
        let groups = vec![
            ("a".to_owned(), 0),
            ("b".to_owned(), 2),
            ("c".to_owned(), 0),
        ];
        for ticket in 0..50 {
            assert_eq!(
                pick_group(&groups, ticket),
                Some(1),
                "ticket {ticket}: only b weighs"
            );
        }
        let none = vec![("a".to_owned(), 0)];
        assert_eq!(pick_group(&none, 7), None, "all weights zero: no group");
        assert_eq!(pick_group(&[], 7), None, "no groups: no group");
        assert_eq!(
            pick_group(&groups, u64::MAX),
            Some(1),
            "the largest ticket still works"
        );
    }

    #[test]
    fn slow_start_gives_a_warming_target_a_smaller_share() {
        let slow_start = Duration::from_secs(100);
        let now = 1_000.0;
        let mut cands = [cand(0), cand(1)];
        cands[1].healthy_since = Some(now - 10.0);
        // Weights 1 and 0.1: target 1 should get 0.1 / 1.1, about 9%.
        let counts = tally(Algorithm::RoundRobin, &cands, slow_start, now, 10_000, 2);
        assert!(
            (700..=1_100).contains(&counts[1]),
            "10s into 100s slow start should get about 909 of 10000, got {counts:?}"
        );

        cands[1].healthy_since = Some(now - 50.0);
        // Weights 1 and 0.5: about 33%.
        let counts = tally(Algorithm::RoundRobin, &cands, slow_start, now, 10_000, 2);
        assert!(
            (3_000..=3_700).contains(&counts[1]),
            "50s into 100s slow start should get about 3333 of 10000, got {counts:?}"
        );

        cands[1].healthy_since = Some(now);
        let counts = tally(Algorithm::RoundRobin, &cands, slow_start, now, 10_000, 2);
        assert!(
            (700..=1_100).contains(&counts[1]),
            "just healthy should get the minimum share (about 909 of 10000), got {counts:?}"
        );
    }

    #[test]
    fn slow_start_over_or_off_is_exact_round_robin() {
        let now = 1_000.0;
        let mut cands = [cand(0), cand(1)];
        cands[1].healthy_since = Some(now - 100.0);
        let counts = tally(
            Algorithm::RoundRobin,
            &cands,
            Duration::from_secs(100),
            now,
            10,
            2,
        );
        assert_eq!(counts, vec![5, 5], "slow start elapsed: exact alternation");
        cands[1].healthy_since = Some(now);
        let counts = tally(Algorithm::RoundRobin, &cands, Duration::ZERO, now, 10, 2);
        assert_eq!(counts, vec![5, 5], "slow start off: exact alternation");
    }

    #[test]
    fn slow_start_does_not_apply_when_failing_open() {
        let now = 1_000.0;
        let mut cands = [cand(0), cand(1)];
        cands[0].healthy = false;
        cands[1].healthy = false;
        cands[1].healthy_since = Some(now);
        let counts = tally(
            Algorithm::RoundRobin,
            &cands,
            Duration::from_secs(100),
            now,
            10,
            2,
        );
        assert_eq!(counts, vec![5, 5], "unhealthy targets are not warming up");
    }

    #[test]
    fn unit_fraction_stays_below_one() {
        assert!(
            unit_fraction(0).abs() < f64::EPSILON,
            "zero bits should give 0"
        );
        assert!(unit_fraction(u64::MAX) < 1.0, "all bits must stay below 1");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn candidate() -> impl Strategy<Value = (bool, usize, Option<f64>, bool)> {
        (
            any::<bool>(),
            0usize..50,
            proptest::option::of(0.0f64..200.0),
            proptest::bool::weighted(0.2),
        )
    }

    proptest! {
        /// Never route to an unhealthy (or initial) target while a healthy one is there, never
        /// to a draining one, whatever the algorithm, slow start, clock and turn.
        #[test]
        fn never_routes_to_an_unhealthy_or_draining_target(
            specs in proptest::collection::vec(candidate(), 0..12),
            least in any::<bool>(),
            slow_start in 0u64..300,
            now in 0.0f64..400.0,
            ticket in any::<u64>(),
        ) {
            let cands: Vec<Candidate> = specs
                .iter()
                .enumerate()
                .map(|(i, (healthy, in_flight, since, draining))| Candidate {
                    index: i * 3 + 1,
                    healthy: *healthy,
                    in_flight: *in_flight,
                    healthy_since: since.filter(|_| *healthy),
                    draining: *draining,
                })
                .collect();
            let algorithm = if least {
                Algorithm::LeastOutstandingRequests
            } else {
                Algorithm::RoundRobin
            };
            let picked = pick(algorithm, &cands, Duration::from_secs(slow_start), now, ticket);
            let any_live = cands.iter().any(|c| !c.draining);
            let any_healthy = cands.iter().any(|c| c.healthy && !c.draining);
            match picked {
                None => prop_assert!(!any_live, "a target could take the request: {cands:?}"),
                Some(index) => {
                    let c = cands.iter().find(|c| c.index == index);
                    prop_assert!(c.is_some(), "picked {index}, not a candidate");
                    let c = c.expect("checked");
                    prop_assert!(!c.draining, "picked a draining target: {c:?}");
                    if any_healthy {
                        prop_assert!(c.healthy, "picked an unhealthy target while a healthy one was there: {c:?}");
                    }
                }
            }
        }
    }
}
