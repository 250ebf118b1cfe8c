//! Metric filters: a log group's named filter patterns that turn each matching event into a
//! CloudWatch datum (`metricValue`, a number or a value the pattern selects, with dimensions
//! selected the same way), or a non-matching one into `defaultValue`. The store keeps them
//! with the group; [`MetricFilter::apply`] is pure and runs on the events a put stored.

use crate::pattern::Pattern;
use crate::store::InputEvent;
use crate::LogError;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Metric filters a group may hold, and dimensions a transformation may name.
pub const MAX_FILTERS_PER_GROUP: usize = 100;
pub const MAX_DIMENSIONS: usize = 3;

/// One metric transformation of a filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Transformation {
    pub metric_name: String,
    pub metric_namespace: String,
    /// A number, or a selector (`$.field`, `$name`) of the pattern.
    pub metric_value: String,
    pub default_value: Option<f64>,
    /// Dimension name → selector.
    pub dimensions: BTreeMap<String, String>,
    /// One of CloudWatch's units; `None` when not given.
    pub unit: Option<String>,
}

/// A metric filter as PutMetricFilter defines it, its pattern parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFilter {
    pub name: String,
    pub pattern_text: String,
    pub pattern: Pattern,
    pub created: i64,
    pub transformations: Vec<Transformation>,
}

/// One datum a filter emits.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub namespace: String,
    pub metric_name: String,
    pub dimensions: Vec<(String, String)>,
    pub value: f64,
    /// The event's timestamp, ms.
    pub timestamp: i64,
    pub unit: Option<String>,
}

fn invalid(message: impl Into<String>) -> LogError {
    LogError::Invalid(message.into())
}

/// Logs' constraint message for a member outside its length or pattern.
fn constraint(value: &str, member: &str, rule: &str) -> LogError {
    invalid(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {rule}"
    ))
}

fn check_metric_name(value: &str, member: &str) -> Result<(), LogError> {
    if value.is_empty() || value.chars().count() > 255 {
        return Err(constraint(
            value,
            member,
            "Member must have length between 1 and 255",
        ));
    }
    if value.contains([':', '*', '$']) {
        return Err(constraint(
            value,
            member,
            "Member must satisfy regular expression pattern: [^:*$]*",
        ));
    }
    Ok(())
}

impl MetricFilter {
    /// A filter, checked as PutMetricFilter checks it: name, pattern, exactly one
    /// transformation with valid names, a value and dimensions the pattern can select.
    pub fn new(
        name: &str,
        pattern_text: &str,
        created: i64,
        transformations: Vec<Transformation>,
    ) -> Result<MetricFilter, LogError> {
        if name.is_empty() || name.chars().count() > 512 {
            return Err(constraint(
                name,
                "filterName",
                "Member must have length between 1 and 512",
            ));
        }
        if name.contains([':', '*']) {
            return Err(constraint(
                name,
                "filterName",
                "Member must satisfy regular expression pattern: [^:*]*",
            ));
        }
        if pattern_text.chars().count() > 1024 {
            return Err(constraint(
                "…",
                "filterPattern",
                "Member must have length less than or equal to 1024",
            ));
        }
        let pattern = Pattern::parse(pattern_text).map_err(|e| invalid(e.to_string()))?;
        if transformations.len() != 1 {
            return Err(invalid(format!(
                "1 validation error detected: Value at 'metricTransformations' failed to satisfy constraint: Member must have length less than or equal to 1 and greater than or equal to 1 (got {})",
                transformations.len()
            )));
        }
        for t in &transformations {
            check_metric_name(&t.metric_name, "metricTransformations.1.member.metricName")?;
            check_metric_name(
                &t.metric_namespace,
                "metricTransformations.1.member.metricNamespace",
            )?;
            let v = t.metric_value.as_str();
            if v.is_empty() || v.chars().count() > 100 {
                return Err(constraint(
                    v,
                    "metricTransformations.1.member.metricValue",
                    "Member must have length between 1 and 100",
                ));
            }
            if v.starts_with('$') {
                pattern
                    .check_selector(v)
                    .map_err(|e| invalid(format!("Invalid metric value '{v}': {}", e.message)))?;
            } else if !v.parse::<f64>().is_ok_and(f64::is_finite) {
                return Err(invalid(format!(
                    "Invalid metric value '{v}': it must be a number or a field of the filter pattern, such as $.latency or $bytes"
                )));
            }
            if t.dimensions.len() > MAX_DIMENSIONS {
                return Err(invalid(format!(
                    "A metric transformation may have at most {MAX_DIMENSIONS} dimensions"
                )));
            }
            for (key, selector) in &t.dimensions {
                if key.is_empty() || key.chars().count() > 255 {
                    return Err(invalid(format!("Invalid dimension name '{key}'")));
                }
                pattern.check_selector(selector).map_err(|e| {
                    invalid(format!(
                        "Invalid dimension value '{selector}' of '{key}': {}",
                        e.message
                    ))
                })?;
            }
            if t.default_value.is_some() && !t.dimensions.is_empty() {
                return Err(invalid(
                    "A metric filter with dimensions cannot have a default value",
                ));
            }
            if t.default_value.is_some_and(|d| !d.is_finite()) {
                return Err(invalid("The default value must be a finite number"));
            }
        }
        Ok(MetricFilter {
            name: name.to_string(),
            pattern_text: pattern_text.to_string(),
            pattern,
            created,
            transformations,
        })
    }

    /// The datums `events` give: each transformation's value for each matching event (an
    /// event whose selected value is not a number, or lacks a dimension's field, gives none),
    /// and the default value for each event that does not match.
    pub fn apply(&self, events: &[InputEvent]) -> Vec<Emitted> {
        let mut out = Vec::new();
        for e in events {
            let matched = self.pattern.matches(&e.message);
            for t in &self.transformations {
                let value = if !matched {
                    t.default_value
                } else if t.metric_value.starts_with('$') {
                    self.pattern
                        .select(&e.message, &t.metric_value)
                        .and_then(|v| v.trim().parse::<f64>().ok())
                } else {
                    t.metric_value.parse::<f64>().ok()
                };
                let Some(value) = value.filter(|v| v.is_finite()) else {
                    continue;
                };
                let dimensions: Option<Vec<(String, String)>> = if matched {
                    t.dimensions
                        .iter()
                        .map(|(k, sel)| Some((k.clone(), self.pattern.select(&e.message, sel)?)))
                        .collect()
                } else {
                    Some(Vec::new())
                };
                let Some(dimensions) = dimensions else {
                    continue;
                };
                out.push(Emitted {
                    namespace: t.metric_namespace.clone(),
                    metric_name: t.metric_name.clone(),
                    dimensions,
                    value,
                    timestamp: e.timestamp,
                    unit: t.unit.clone(),
                });
            }
        }
        out
    }

    /// The filter as the group file keeps it.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "pattern": self.pattern_text,
            "created": self.created,
            "transformations": self.transformations.iter().map(|t| json!({
                "metricName": t.metric_name,
                "metricNamespace": t.metric_namespace,
                "metricValue": t.metric_value,
                "defaultValue": t.default_value,
                "dimensions": t.dimensions,
                "unit": t.unit,
            })).collect::<Vec<_>>(),
        })
    }

    /// A filter from the group file.
    pub fn from_json(v: &Value) -> Result<MetricFilter, LogError> {
        let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
        let transformations = v["transformations"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|t| Transformation {
                        metric_name: text(t, "metricName"),
                        metric_namespace: text(t, "metricNamespace"),
                        metric_value: text(t, "metricValue"),
                        default_value: t["defaultValue"].as_f64(),
                        dimensions: t["dimensions"]
                            .as_object()
                            .map(|o| {
                                o.iter()
                                    .map(|(k, v)| {
                                        (k.clone(), v.as_str().unwrap_or_default().to_string())
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                        unit: t["unit"].as_str().map(str::to_string),
                    })
                    .collect()
            })
            .unwrap_or_default();
        MetricFilter::new(
            &text(v, "name"),
            &text(v, "pattern"),
            v["created"].as_i64().unwrap_or_default(),
            transformations,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(value: &str, dims: &[(&str, &str)], default: Option<f64>) -> Transformation {
        Transformation {
            metric_name: "M".into(),
            metric_namespace: "App".into(),
            metric_value: value.into(),
            default_value: default,
            dimensions: dims
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            unit: None,
        }
    }

    fn ev(ts: i64, m: &str) -> InputEvent {
        InputEvent {
            timestamp: ts,
            message: m.into(),
        }
    }

    #[test]
    fn counts_matches_and_reports_the_default_for_the_rest() {
        let f = MetricFilter::new("errors", "ERROR", 1, vec![t("1", &[], Some(0.0))]).unwrap();
        let out = f.apply(&[ev(5, "ERROR x"), ev(6, "fine"), ev(7, "ERROR y")]);
        let values: Vec<(i64, f64)> = out.iter().map(|e| (e.timestamp, e.value)).collect();
        assert_eq!(values, vec![(5, 1.0), (6, 0.0), (7, 1.0)]);
    }

    #[test]
    fn values_and_dimensions_come_from_the_event() {
        let f = MetricFilter::new(
            "lat",
            r#"{ $.latency > 0 }"#,
            1,
            vec![t("$.latency", &[("Route", "$.route")], None)],
        )
        .unwrap();
        let out = f.apply(&[
            ev(1, r#"{"latency": 120, "route": "/a"}"#),
            ev(2, r#"{"latency": 7}"#),
            ev(3, "not json"),
        ]);
        assert_eq!(
            out.len(),
            1,
            "the event without a route gives nothing: {out:?}"
        );
        assert_eq!(out[0].value, 120.0);
        assert_eq!(out[0].dimensions, vec![("Route".into(), "/a".into())]);
    }

    #[test]
    fn bad_filters_are_refused_and_good_ones_round_trip() {
        for (name, pattern, tr) in [
            ("a:b", "", t("1", &[], None)),
            ("a", "[ip", t("1", &[], None)),
            ("a", "ERROR", t("$.x", &[], None)),
            ("a", "[ip, bytes]", t("$size", &[], None)),
            ("a", "[ip, bytes]", t("one", &[], None)),
            ("a", "[ip, bytes]", t("$bytes", &[("Ip", "$ip")], Some(0.0))),
        ] {
            assert!(
                MetricFilter::new(name, pattern, 1, vec![tr]).is_err(),
                "{name} {pattern} should be refused"
            );
        }
        assert!(
            MetricFilter::new("a", "", 1, vec![]).is_err(),
            "one transformation"
        );
        let f = MetricFilter::new(
            "bytes",
            "[ip, user, bytes]",
            9,
            vec![t("$bytes", &[("User", "$user")], None)],
        )
        .unwrap();
        assert_eq!(MetricFilter::from_json(&f.to_json()).unwrap(), f);
    }
}
