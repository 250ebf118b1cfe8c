//! ECS's tag rules: at most 50 per resource, keys 1–128 and values 0–256 characters of
//! letters, numbers, spaces and `_ . : / = + - @`, and the `aws:` prefix reserved.

use crate::Invalid;

pub const MAX_TAGS: usize = 50;

fn allowed(c: char) -> bool {
    c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c)
}

pub fn check_tag(key: &str, value: &str) -> Result<(), Invalid> {
    let key_len = key.chars().count();
    if key_len == 0 || key_len > 128 {
        return Err(Invalid::parameter(format!(
            "tag key '{key}' must be 1 to 128 characters long"
        )));
    }
    if value.chars().count() > 256 {
        return Err(Invalid::parameter(format!(
            "tag value for key '{key}' must be at most 256 characters long"
        )));
    }
    if let Some(c) = key.chars().chain(value.chars()).find(|c| !allowed(*c)) {
        return Err(Invalid::parameter(format!(
            "tag '{key}' contains the character {c:?}, which tags do not allow"
        )));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(Invalid::parameter(format!(
            "tag key '{key}' uses the reserved prefix 'aws:'"
        )));
    }
    Ok(())
}

/// Checks a resource's final tag count.
pub fn check_count(count: usize) -> Result<(), Invalid> {
    if count > MAX_TAGS {
        return Err(Invalid::parameter(format!(
            "a resource can have at most {MAX_TAGS} tags; this request would leave it with {count}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(check_tag("team", "web").is_ok());
        assert!(check_tag("k", "").is_ok());
        assert!(check_tag("", "v").is_err());
        assert!(check_tag(&"k".repeat(129), "v").is_err());
        assert!(check_tag("k", &"v".repeat(257)).is_err());
        assert!(check_tag("aws:owner", "v").is_err());
        assert!(check_tag("k", "semi;colon").is_err());
        assert!(check_count(50).is_ok());
        assert!(check_count(51).is_err());
    }
}
