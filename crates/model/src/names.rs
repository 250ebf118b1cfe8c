//! Name rules shared by ECS resources.

use crate::Invalid;

/// ECS's rule for cluster names, task-definition families and container names: 1 to 255
/// letters, numbers, underscores and hyphens.
fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn cluster_name(name: &str) -> Result<(), Invalid> {
    if is_simple_name(name) {
        Ok(())
    } else {
        Err(Invalid::parameter(format!(
            "clusterName '{name}' is invalid: up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed"
        )))
    }
}

pub fn family(name: &str) -> Result<(), Invalid> {
    if is_simple_name(name) {
        Ok(())
    } else {
        Err(Invalid::client(format!(
            "family '{name}' is invalid: up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed"
        )))
    }
}

pub fn container_name(name: &str) -> Result<(), Invalid> {
    if is_simple_name(name) {
        Ok(())
    } else {
        Err(Invalid::client(format!(
            "containerDefinitions.name '{name}' is invalid: up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_names() {
        assert!(cluster_name("prod-1_a").is_ok());
        assert!(cluster_name("").is_err());
        assert!(cluster_name("has space").is_err());
        assert!(cluster_name(&"x".repeat(255)).is_ok());
        assert!(cluster_name(&"x".repeat(256)).is_err());
        assert!(family("web:1").is_err());
        let err = family("a/b").unwrap_err();
        assert!(err.message.contains("'a/b'"), "{err}");
    }
}
