//! ECR lifecycle policies: parsing with ECR's rules, and evaluation as a pure function of the
//! repository's images and `now`.
//!
//! Rules are applied in `rulePriority` order, lowest first. An image belongs to the first rule
//! whose selection matches it, whether that rule keeps it or expires it, so a lower-priority
//! rule never expires an image a higher one selected (ECR's rule).

use crate::Error;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    rules: Vec<RawRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "rulePriority")]
    rule_priority: i64,
    #[serde(default)]
    description: Option<String>,
    selection: RawSelection,
    action: RawAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelection {
    #[serde(rename = "tagStatus")]
    tag_status: String,
    #[serde(rename = "tagPrefixList", default)]
    tag_prefix_list: Option<Vec<String>>,
    #[serde(rename = "tagPatternList", default)]
    tag_pattern_list: Option<Vec<String>>,
    #[serde(rename = "countType")]
    count_type: String,
    #[serde(rename = "countUnit", default)]
    count_unit: Option<String>,
    #[serde(rename = "countNumber")]
    count_number: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Count {
    /// Keep the newest N; expire the rest.
    MoreThan(u64),
    /// Expire those pushed more than N days ago.
    SincePushedDays(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub priority: i64,
    pub tag_status: TagStatus,
    pub prefixes: Vec<String>,
    pub patterns: Vec<String>,
    pub count: Count,
}

/// A validated lifecycle policy, rules in priority order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

/// What evaluation needs to know of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    pub digest: String,
    pub tags: Vec<String>,
    /// Seconds since the epoch.
    pub pushed_at: f64,
}

fn invalid(m: impl Into<String>) -> Error {
    Error::Invalid(format!("invalid lifecycle policy: {}", m.into()))
}

/// Parses a policy as ECR checks it.
pub fn parse(text: &str) -> Result<Policy, Error> {
    if text.trim().is_empty() {
        return Err(invalid("the policy text is empty"));
    }
    let raw: RawPolicy = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    if raw.rules.is_empty() {
        return Err(invalid("'rules' must hold at least one rule"));
    }
    let mut rules = Vec::new();
    for r in raw.rules {
        let _ = &r.description;
        let p = r.rule_priority;
        if p < 1 {
            return Err(invalid(format!(
                "rulePriority {p} must be a positive integer"
            )));
        }
        if rules.iter().any(|x: &Rule| x.priority == p) {
            return Err(invalid(format!(
                "rulePriority {p} is used by more than one rule"
            )));
        }
        if r.action.kind != "expire" {
            return Err(invalid(format!(
                "rule {p}: action type '{}' is not supported; use 'expire'",
                r.action.kind
            )));
        }
        let s = r.selection;
        let tag_status = match s.tag_status.as_str() {
            "tagged" => TagStatus::Tagged,
            "untagged" => TagStatus::Untagged,
            "any" => TagStatus::Any,
            other => {
                return Err(invalid(format!(
                    "rule {p}: tagStatus '{other}' is not one of tagged, untagged, any"
                )))
            }
        };
        let prefixes = s.tag_prefix_list.unwrap_or_default();
        let patterns = s.tag_pattern_list.unwrap_or_default();
        match tag_status {
            TagStatus::Tagged if prefixes.is_empty() && patterns.is_empty() => {
                return Err(invalid(format!(
                    "rule {p}: tagStatus 'tagged' needs a tagPrefixList or a tagPatternList"
                )))
            }
            TagStatus::Tagged if !prefixes.is_empty() && !patterns.is_empty() => {
                return Err(invalid(format!(
                    "rule {p}: use either tagPrefixList or tagPatternList, not both"
                )))
            }
            TagStatus::Untagged | TagStatus::Any
                if !prefixes.is_empty() || !patterns.is_empty() =>
            {
                return Err(invalid(format!(
                    "rule {p}: tagPrefixList and tagPatternList go only with tagStatus 'tagged'"
                )))
            }
            _ => {}
        }
        if s.count_number < 1 {
            return Err(invalid(format!(
                "rule {p}: countNumber {} must be at least 1",
                s.count_number
            )));
        }
        let n = s.count_number as u64;
        let count = match (s.count_type.as_str(), s.count_unit.as_deref()) {
            ("imageCountMoreThan", None) => Count::MoreThan(n),
            ("imageCountMoreThan", Some(u)) => {
                return Err(invalid(format!(
                    "rule {p}: countUnit '{u}' cannot be used with imageCountMoreThan"
                )))
            }
            ("sinceImagePushed", Some("days")) => Count::SincePushedDays(n),
            ("sinceImagePushed", other) => {
                return Err(invalid(format!(
                    "rule {p}: sinceImagePushed needs countUnit 'days', not {other:?}"
                )))
            }
            (other, _) => {
                return Err(invalid(format!(
                "rule {p}: countType '{other}' is not one of imageCountMoreThan, sinceImagePushed"
            )))
            }
        };
        rules.push(Rule {
            priority: p,
            tag_status,
            prefixes,
            patterns,
            count,
        });
    }
    rules.sort_by_key(|r| r.priority);
    if let Some(pos) = rules.iter().position(|r| r.tag_status == TagStatus::Any) {
        if pos != rules.len() - 1 {
            return Err(invalid(format!(
                "rule {}: a rule with tagStatus 'any' must have the highest rulePriority",
                rules[pos].priority
            )));
        }
    }
    Ok(Policy { rules })
}

/// `*` matches any run of characters.
pub(crate) fn wildcard(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let mut rest = s;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

impl Rule {
    fn selects(&self, image: &ImageInfo) -> bool {
        match self.tag_status {
            TagStatus::Any => true,
            TagStatus::Untagged => image.tags.is_empty(),
            // Every prefix (or pattern) must match one of the image's tags.
            TagStatus::Tagged => {
                self.prefixes
                    .iter()
                    .all(|p| image.tags.iter().any(|t| t.starts_with(p.as_str())))
                    && self
                        .patterns
                        .iter()
                        .all(|p| image.tags.iter().any(|t| wildcard(p, t)))
                    && !image.tags.is_empty()
            }
        }
    }
}

/// The digests the policy expires now, each with the priority of the rule that expires it.
pub fn evaluate(policy: &Policy, images: &[ImageInfo], now: f64) -> Vec<(String, i64)> {
    let mut claimed = vec![false; images.len()];
    let mut expired = Vec::new();
    for rule in &policy.rules {
        let mut selected: Vec<usize> = (0..images.len())
            .filter(|&i| !claimed[i] && rule.selects(&images[i]))
            .collect();
        for &i in &selected {
            claimed[i] = true;
        }
        match rule.count {
            Count::MoreThan(n) => {
                // Newest first; ties by digest so the answer is deterministic.
                selected.sort_by(|&a, &b| {
                    images[b]
                        .pushed_at
                        .total_cmp(&images[a].pushed_at)
                        .then_with(|| images[a].digest.cmp(&images[b].digest))
                });
                for &i in selected.iter().skip(n as usize) {
                    expired.push((images[i].digest.clone(), rule.priority));
                }
            }
            Count::SincePushedDays(days) => {
                let cutoff = now - (days as f64) * 86_400.0;
                for &i in &selected {
                    if images[i].pushed_at < cutoff {
                        expired.push((images[i].digest.clone(), rule.priority));
                    }
                }
            }
        }
    }
    expired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(d: &str, tags: &[&str], at: f64) -> ImageInfo {
        ImageInfo {
            digest: d.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at: at,
        }
    }

    fn expired(policy: &str, images: &[ImageInfo], now: f64) -> Vec<String> {
        let mut v: Vec<String> = evaluate(&parse(policy).unwrap(), images, now)
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn count_rules_keep_the_newest() {
        let images = [
            img("a", &["prod-1"], 1.0),
            img("b", &["prod-2"], 2.0),
            img("c", &["prod-3"], 3.0),
            img("d", &[], 4.0),
            img("e", &["dev-1"], 5.0),
        ];
        let p = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}}]}"#;
        assert_eq!(expired(p, &images, 10.0), ["a"]);
        let p = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
        assert!(expired(p, &images, 10.0).is_empty());
        let p = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":3},"action":{"type":"expire"}}]}"#;
        assert_eq!(expired(p, &images, 10.0), ["a", "b"]);
    }

    #[test]
    fn a_higher_rule_protects_what_it_selects() {
        let images = [
            img("a", &["prod-1"], 1.0),
            img("b", &["prod-2"], 2.0),
            img("c", &["dev"], 3.0),
        ];
        // Rule 1 keeps up to 5 prod images; rule 2 ("any", keep 1) must not expire them.
        let p = r#"{"rules":[
            {"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":5},"action":{"type":"expire"}},
            {"rulePriority":2,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#;
        assert!(expired(p, &images, 10.0).is_empty());
    }

    #[test]
    fn age_rules_and_patterns() {
        let day = 86_400.0;
        let images = [
            img("old", &["v1-rc"], 0.0),
            img("new", &["v2-rc"], 9.5 * day),
            img("untagged-old", &[], 0.0),
        ];
        let p = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPatternList":["v*-rc"],"countType":"sinceImagePushed","countUnit":"days","countNumber":3},"action":{"type":"expire"}}]}"#;
        assert_eq!(expired(p, &images, 10.0 * day), ["old"]);
        let p = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":1},"action":{"type":"expire"}}]}"#;
        assert_eq!(expired(p, &images, 10.0 * day), ["untagged-old"]);
        assert!(wildcard("a*b*c", "axxbyyc"));
        assert!(!wildcard("a*b", "ab-c"));
        assert!(wildcard("*", "x"));
    }

    #[test]
    fn invalid_policies_say_why() {
        for (p, want) in [
            ("{}", "missing field `rules`"),
            (r#"{"rules":[]}"#, "at least one rule"),
            (
                r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
                "needs a tagPrefixList",
            ),
            (
                r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}},{"rulePriority":2,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}"#,
                "highest rulePriority",
            ),
            (
                r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countNumber":1},"action":{"type":"expire"}}]}"#,
                "countUnit 'days'",
            ),
            (
                r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":0},"action":{"type":"expire"}}]}"#,
                "at least 1",
            ),
            (
                r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"delete"}}]}"#,
                "'expire'",
            ),
        ] {
            let e = parse(p).unwrap_err().to_string();
            assert!(e.contains(want), "{p}: {e}");
        }
    }
}
