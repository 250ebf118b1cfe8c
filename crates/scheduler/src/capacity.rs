//! ECS's capacity provider strategy arithmetic: which provider each new task goes to. Pure.
//!
//! Each item has a `base` (tasks it gets before any other provider gets one by weight) and a
//! `weight` (its share of the rest). Bases are met first, in strategy order; beyond them, each
//! task goes to the provider furthest below its weight's share (the earlier item among
//! equals), so the counts never stray a whole task from the weights, and the tasks a service
//! already has count too.

/// One item of a strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub base: u32,
    pub weight: u32,
}

/// Why a strategy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    #[error("The capacity provider strategy is empty or has more than 6 items.")]
    Size,
    #[error("Only one capacity provider in a capacity provider strategy can have a base defined.")]
    TwoBases,
    #[error("At least one capacity provider in a capacity provider strategy must have a weight greater than zero.")]
    NoWeight,
    #[error("A capacity provider's base must be between 0 and 100000 and its weight between 0 and 1000.")]
    Range,
}

/// Checks a strategy as ECS does.
pub fn check(items: &[Item]) -> Result<(), StrategyError> {
    if items.is_empty() || items.len() > 6 {
        return Err(StrategyError::Size);
    }
    if items.iter().any(|i| i.base > 100_000 || i.weight > 1000) {
        return Err(StrategyError::Range);
    }
    if items.iter().filter(|i| i.base > 0).count() > 1 {
        return Err(StrategyError::TwoBases);
    }
    if items.iter().all(|i| i.weight == 0) {
        return Err(StrategyError::NoWeight);
    }
    Ok(())
}

/// The item (by index) each of `n` new tasks goes to, given how many tasks each item already
/// has (`existing`, by index; missing ones count 0). The strategy must pass [`check`].
pub fn split(items: &[Item], existing: &[u32], n: usize) -> Vec<usize> {
    let mut counts: Vec<u64> = (0..items.len())
        .map(|i| u64::from(existing.get(i).copied().unwrap_or(0)))
        .collect();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let pick = match (0..items.len()).find(|&i| counts[i] < u64::from(items[i].base)) {
            Some(i) => i,
            None => {
                // The largest shortfall against the weights' share of the tasks beyond the
                // bases once this one is placed: (t + 1) * w_i / W - beyond_i, times W.
                let beyond = |k: usize| counts[k].saturating_sub(u64::from(items[k].base)) as i128;
                let t: i128 = (0..items.len()).map(beyond).sum();
                let total: i128 = items.iter().map(|i| i128::from(i.weight)).sum();
                let shortfall =
                    |k: usize| (t + 1) * i128::from(items[k].weight) - beyond(k) * total;
                match (0..items.len()).filter(|&i| items[i].weight > 0).fold(
                    None,
                    |best: Option<usize>, i| match best {
                        Some(b) if shortfall(b) >= shortfall(i) => Some(b),
                        _ => Some(i),
                    },
                ) {
                    Some(b) => b,
                    None => break,
                }
            }
        };
        counts[pick] += 1;
        out.push(pick);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(base: u32, weight: u32) -> Item {
        Item { base, weight }
    }

    #[test]
    fn bases_first_then_weights() {
        // ECS's example: base 2 on FARGATE, then 1:3 FARGATE:FARGATE_SPOT.
        let s = [item(2, 1), item(0, 3)];
        let picks = split(&s, &[], 10);
        let fargate = picks.iter().filter(|&&p| p == 0).count();
        assert_eq!(&picks[..2], &[0, 0], "the base first: {picks:?}");
        assert_eq!(fargate, 2 + 2, "8 beyond the base split 1:3: {picks:?}");
    }

    #[test]
    fn existing_tasks_count() {
        let s = [item(0, 1), item(0, 1)];
        assert_eq!(split(&s, &[3, 0], 3), [1, 1, 1]);
    }

    #[test]
    fn strategies_are_checked() {
        assert_eq!(check(&[]), Err(StrategyError::Size));
        assert_eq!(
            check(&[item(1, 1), item(1, 1)]),
            Err(StrategyError::TwoBases)
        );
        assert_eq!(check(&[item(0, 0)]), Err(StrategyError::NoWeight));
        assert_eq!(check(&[item(0, 1001)]), Err(StrategyError::Range));
        assert_eq!(check(&[item(5, 0), item(0, 2)]), Ok(()));
    }

    fn strategy() -> impl Strategy<Value = Vec<Item>> {
        (1usize..=6, 0usize..6, 0u32..20).prop_flat_map(|(len, based, base)| {
            proptest::collection::vec(0u32..10, len).prop_map(move |weights| {
                let mut items: Vec<Item> = weights.iter().map(|&w| item(0, w)).collect();
                let b = based % items.len();
                items[b].base = base;
                if items.iter().all(|i| i.weight == 0) {
                    items[0].weight = 1;
                }
                items
            })
        })
    }

    proptest! {
        /// Every task goes somewhere; bases are met before any weight counts; weight-0 items
        /// get nothing beyond their base; beyond the bases, counts follow the weights to
        /// within one task.
        #[test]
        fn splits_follow_base_and_weight(items in strategy(), n in 0usize..200) {
            prop_assert!(check(&items).is_ok());
            let picks = split(&items, &[], n);
            prop_assert_eq!(picks.len(), n);
            let mut counts = vec![0u64; items.len()];
            for (k, &p) in picks.iter().enumerate() {
                let unmet = (0..items.len()).find(|&i| counts[i] < u64::from(items[i].base));
                if let Some(u) = unmet {
                    prop_assert_eq!(p, u, "task {} must go to the unmet base", k);
                }
                counts[p] += 1;
            }
            let total_base: u64 = items.iter().map(|i| u64::from(i.base)).sum();
            let rest = (n as u64).saturating_sub(total_base);
            let weights: u64 = items.iter().map(|i| u64::from(i.weight)).sum();
            for (i, it) in items.iter().enumerate() {
                let beyond = counts[i].saturating_sub(u64::from(it.base));
                if it.weight == 0 {
                    prop_assert_eq!(beyond, 0);
                } else if n as u64 >= total_base {
                    let ideal = rest as f64 * f64::from(it.weight) / weights as f64;
                    prop_assert!((beyond as f64 - ideal).abs() <= 1.0 + 1e-9,
                        "item {} got {} beyond its base, ideal {}", i, beyond, ideal);
                }
            }
        }
    }
}
