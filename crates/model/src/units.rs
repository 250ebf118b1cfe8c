//! ECS's cpu and memory strings: task-level `cpu` is "1024" or "1 vCPU" (also "0.25 vcpu"),
//! `memory` is "2048" (MiB) or "2 GB" (also "0.5GB").

use crate::Invalid;

/// CPU units (1024 per vCPU) from a task-level `cpu` string.
pub fn parse_cpu(s: &str) -> Result<u32, Invalid> {
    parse_quantity(s, &["vcpu"], 1024.0).ok_or_else(|| {
        Invalid::client(format!(
            "Invalid 'cpu' setting for task. ('{s}': give CPU units (\"1024\") or vCPUs (\"1 vCPU\"))"
        ))
    })
}

/// MiB from a task-level `memory` string.
pub fn parse_memory(s: &str) -> Result<u32, Invalid> {
    parse_quantity(s, &["gb", "gib"], 1024.0).ok_or_else(|| {
        Invalid::client(format!(
            "Invalid 'memory' setting for task. ('{s}': give MiB (\"2048\") or GB (\"2 GB\"))"
        ))
    })
}

fn parse_quantity(s: &str, units: &[&str], per_unit: f64) -> Option<u32> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (number, scale) = match units.iter().find(|u| lower.ends_with(*u)) {
        Some(u) => (
            lower[..lower.len() - u.len()].trim_end().to_string(),
            per_unit,
        ),
        None => (lower, 1.0),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let scaled = value * scale;
    if !(1.0..=(u32::MAX as f64)).contains(&scaled) || scaled.fract() != 0.0 {
        return None;
    }
    Some(scaled as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_forms() {
        assert_eq!(parse_cpu("1024").unwrap(), 1024);
        assert_eq!(parse_cpu("1 vCPU").unwrap(), 1024);
        assert_eq!(parse_cpu("0.25 vcpu").unwrap(), 256);
        assert_eq!(parse_cpu("2vCPU").unwrap(), 2048);
        for bad in ["", "vCPU", "-1", "1.5", "one", "0", "0.0001 vCPU"] {
            assert!(parse_cpu(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memory_forms() {
        assert_eq!(parse_memory("512").unwrap(), 512);
        assert_eq!(parse_memory("2 GB").unwrap(), 2048);
        assert_eq!(parse_memory("0.5GB").unwrap(), 512);
        assert!(parse_memory("2 TB").is_err());
        assert!(parse_memory("GB").is_err());
    }
}
