//! The Fargate task-size table: which task memory sizes each cpu size allows.

/// (cpu units, lowest MiB, highest MiB, step MiB), from ECS's documentation.
const SIZES: &[(u32, u32, u32, u32)] = &[
    (256, 512, 2048, 512),
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122880, 8192),
];

/// Whether Fargate offers a task of `cpu` units and `memory` MiB.
pub fn is_valid_size(cpu: u32, memory: u32) -> bool {
    SIZES.iter().any(|&(c, lo, hi, step)| {
        c == cpu && (lo..=hi).contains(&memory) && (memory - lo).is_multiple_of(step)
    })
}

/// Every size Fargate offers, (cpu units, memory MiB), smallest first: the choices of the
/// console's task-size menu.
pub fn sizes() -> Vec<(u32, u32)> {
    SIZES
        .iter()
        .flat_map(|&(c, lo, hi, step)| (lo..=hi).step_by(step as usize).map(move |m| (c, m)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_size_is_valid() {
        let all = sizes();
        assert_eq!(all.first(), Some(&(256, 512)));
        assert_eq!(all.last(), Some(&(16384, 122880)));
        assert!(all.iter().all(|&(c, m)| is_valid_size(c, m)));
    }

    #[test]
    fn table() {
        assert!(is_valid_size(256, 512));
        assert!(is_valid_size(256, 1024));
        assert!(is_valid_size(256, 2048));
        assert!(!is_valid_size(256, 4096));
        assert!(is_valid_size(1024, 3072));
        assert!(!is_valid_size(512, 8192));
        assert!(is_valid_size(8192, 20480));
        assert!(!is_valid_size(8192, 17408));
        assert!(!is_valid_size(300, 1024));
    }
}
