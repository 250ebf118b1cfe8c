//! CloudWatch's metrics API on the shared port: one exhaustive `match` over
//! [`CloudWatchRequest`], each arm a call into the [`MetricStore`], answered in CBOR (Smithy
//! RPC v2, what the current AWS CLI speaks) or JSON 1.0, with CloudWatch's errors. The store is
//! fed by PutMetricData and by Container Insights ([`crate::insights`]).

use crate::{Caller, Control};
use berth_api::cbor::ToCbor;
use berth_api::cloudwatch::*;
use berth_api::{EcsError, ErrorKind};
use berth_cloudwatch::{Datum, ListFilter, MetricError, SeriesKey, Statistic, Stats, Unit};
use serde::Serialize;

/// How a request came, and so how it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Smithy RPC v2 CBOR.
    Cbor,
    /// AWS JSON 1.0.
    Json,
}

impl Wire {
    fn encode<T: Serialize + ToCbor>(self, value: &T) -> Result<Vec<u8>, EcsError> {
        match self {
            Wire::Cbor => {
                let mut e = berth_api::cbor::Encoder::new();
                value.to_cbor(&mut e);
                Ok(e.into_bytes())
            }
            Wire::Json => crate::json(value),
        }
    }
}

/// Items in one PutMetricData, dimensions per metric, values per datum, and queries per
/// GetMetricData: CloudWatch's own limits.
const MAX_PUT_DATA: usize = 1000;
const MAX_DIMENSIONS: usize = 30;
const MAX_VALUES: usize = 150;
const MAX_QUERIES: usize = 500;
/// Datapoints one GetMetricStatistics may return.
const MAX_STAT_POINTS: i64 = 1440;
/// GetMetricData's default (and largest) MaxDatapoints.
const MAX_DATA_POINTS: i32 = 100_800;
/// Metrics per ListMetrics page.
const LIST_PAGE: usize = 500;
/// ListMetrics' RecentlyActive=PT3H window.
const RECENT_MS: i64 = 3 * 3600 * 1000;

fn invalid(message: impl Into<String>) -> EcsError {
    EcsError::new(ErrorKind::InvalidParameterValue, message)
}

fn combination(message: impl Into<String>) -> EcsError {
    EcsError::new(ErrorKind::InvalidParameterCombination, message)
}

/// Runs store work off the async threads; a failed task is CloudWatch's internal fault.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EcsError> + Send + 'static,
) -> Result<T, EcsError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        EcsError::new(
            ErrorKind::InternalServiceFault,
            format!("the metric store task failed: {e}"),
        )
    })?
}

fn metric_error(e: MetricError) -> EcsError {
    match e {
        MetricError::Invalid(m) => invalid(m),
        e @ MetricError::Io { .. } => {
            tracing::error!(error = ?e, "metric storage failed");
            EcsError::new(ErrorKind::InternalServiceFault, e.to_string())
        }
    }
}

fn millis(seconds: f64) -> i64 {
    (seconds * 1000.0).floor() as i64
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn check_name(what: &str, value: &str, max: usize) -> Result<(), EcsError> {
    if value.is_empty() || value.chars().count() > max {
        return Err(invalid(format!(
            "The value {value} for parameter {what} is invalid: it must be 1 to {max} characters."
        )));
    }
    Ok(())
}

fn check_namespace(what: &str, ns: &str) -> Result<(), EcsError> {
    check_name(what, ns, 255)?;
    if ns.starts_with(':') || ns.chars().any(char::is_control) {
        return Err(invalid(format!(
            "The value {ns} for parameter {what} is invalid."
        )));
    }
    Ok(())
}

fn unit(value: Option<&str>, what: &str) -> Result<Option<Unit>, EcsError> {
    value
        .map(|u| {
            Unit::parse(u).ok_or_else(|| {
                invalid(format!(
                    "The value {u} for parameter {what} is not one of CloudWatch's units."
                ))
            })
        })
        .transpose()
}

/// A metric's dimensions, checked as CloudWatch checks them.
fn dimensions(
    list: Option<&Vec<Dimension>>,
    what: &str,
) -> Result<Vec<(String, String)>, EcsError> {
    let list = list.map(Vec::as_slice).unwrap_or_default();
    if list.len() > MAX_DIMENSIONS {
        return Err(invalid(format!(
            "The collection {what} must not have a size greater than {MAX_DIMENSIONS}."
        )));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(list.len());
    for (i, d) in list.iter().enumerate() {
        let name = d.name.clone().unwrap_or_default();
        let value = d.value.clone().unwrap_or_default();
        check_name(&format!("{what}.member.{}.Name", i + 1), &name, 255)?;
        check_name(&format!("{what}.member.{}.Value", i + 1), &value, 1024)?;
        if out.iter().any(|(n, _)| *n == name) {
            return Err(invalid(format!(
                "No Metric may specify the same dimension twice. The dimension {name} was specified more than once."
            )));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// CloudWatch refuses values it cannot store (and every NaN or infinity).
fn check_value(what: &str, v: f64) -> Result<(), EcsError> {
    let magnitude = v.abs();
    if !v.is_finite() || (magnitude != 0.0 && !(8.515920e-109..=1.174271e+108).contains(&magnitude))
    {
        return Err(invalid(format!(
            "The value {v} for parameter {what} is invalid: it must be within 8.515920e-109 to 1.174271e+108 (Base 10) or 2e-360 to 2e360 (Base 2)."
        )));
    }
    Ok(())
}

/// One MetricDatum as a statistic set, with its checks.
fn datum(namespace: &str, i: usize, d: &MetricDatum, now_ms: i64) -> Result<Datum, EcsError> {
    let at = format!("MetricData.member.{i}");
    let name = d.metric_name.clone().unwrap_or_default();
    check_name(&format!("{at}.MetricName"), &name, 255)?;
    let dims = dimensions(d.dimensions.as_ref(), &format!("{at}.Dimensions"))?;
    let given = [
        d.value.is_some(),
        d.statistic_values.is_some(),
        d.values.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(combination(format!(
            "The parameters {at}.Value, {at}.StatisticValues and {at}.Values are mutually exclusive and you have specified more than one."
        )));
    }
    if d.counts.is_some() && d.values.is_none() {
        return Err(combination(format!(
            "The parameter {at}.Counts may only be given with {at}.Values."
        )));
    }
    let stats = if let Some(v) = d.value {
        check_value(&format!("{at}.Value"), v)?;
        Stats::from_value(v)
    } else if let Some(s) = &d.statistic_values {
        let (count, sum, min, max) = (
            s.sample_count.unwrap_or_default(),
            s.sum.unwrap_or_default(),
            s.minimum.unwrap_or_default(),
            s.maximum.unwrap_or_default(),
        );
        for (what, v) in [
            ("SampleCount", count),
            ("Sum", sum),
            ("Minimum", min),
            ("Maximum", max),
        ] {
            check_value(&format!("{at}.StatisticValues.{what}"), v)?;
        }
        if count <= 0.0 || min > max {
            return Err(invalid(format!(
                "The parameter {at}.StatisticValues is invalid: SampleCount must be positive and Minimum at most Maximum."
            )));
        }
        Stats {
            sum,
            count,
            min,
            max,
        }
    } else if let Some(values) = &d.values {
        if values.is_empty() || values.len() > MAX_VALUES {
            return Err(invalid(format!(
                "The collection {at}.Values must hold 1 to {MAX_VALUES} values."
            )));
        }
        let counts = d.counts.as_ref();
        if counts.is_some_and(|c| c.len() != values.len()) {
            return Err(combination(format!(
                "The parameters {at}.Values and {at}.Counts must be of the same size."
            )));
        }
        let mut s: Option<Stats> = None;
        for (j, v) in values.iter().enumerate() {
            check_value(&format!("{at}.Values.member.{}", j + 1), *v)?;
            let c = counts.and_then(|c| c.get(j)).copied().unwrap_or(1.0);
            if !(c.is_finite() && c > 0.0) {
                return Err(invalid(format!(
                    "The value {c} for parameter {at}.Counts.member.{} is invalid: counts must be positive.",
                    j + 1
                )));
            }
            let one = Stats {
                sum: v * c,
                count: c,
                min: *v,
                max: *v,
            };
            match &mut s {
                Some(s) => s.merge(one),
                None => s = Some(one),
            }
        }
        s.ok_or_else(|| invalid(format!("{at}.Values is empty")))?
    } else {
        return Err(combination(format!(
            "One of the parameters {at}.Value, {at}.StatisticValues or {at}.Values must be specified."
        )));
    };
    let high_resolution = match d.storage_resolution {
        None | Some(60) => false,
        Some(1) => true,
        Some(n) => {
            return Err(invalid(format!(
                "The value {n} for parameter {at}.StorageResolution is invalid: it must be 1 or 60."
            )))
        }
    };
    if d.timestamp.is_some_and(|t| !(0.0..=LATEST_S).contains(&t)) {
        return Err(invalid(format!(
            "The parameter {at}.Timestamp must be a time between 1970 and 9999."
        )));
    }
    Ok(Datum {
        key: SeriesKey::new(namespace, &name, dims),
        timestamp_ms: d.timestamp.map(millis).unwrap_or(now_ms),
        unit: unit(d.unit.as_deref(), &format!("{at}.Unit"))?.unwrap_or(Unit::None),
        stats,
        high_resolution,
    })
}

/// A period CloudWatch accepts: 1, 5, 10, 20 or 30 seconds (high resolution), or a multiple
/// of 60.
fn check_period(what: &str, period: i32) -> Result<i64, EcsError> {
    if period <= 0 || !(matches!(period, 1 | 5 | 10 | 20 | 30) || period % 60 == 0) {
        return Err(invalid(format!(
            "The parameter {what} must be 1, 5, 10, 20, 30, or a multiple of 60."
        )));
    }
    Ok(i64::from(period))
}

/// The latest time CloudWatch's timestamps may name: the end of year 9999.
const LATEST_S: f64 = 253_402_300_799.0;

fn time_range(start: Option<f64>, end: Option<f64>) -> Result<(i64, i64), EcsError> {
    for (what, t) in [("StartTime", start), ("EndTime", end)] {
        let t = t.unwrap_or_default();
        if !(0.0..=LATEST_S).contains(&t) {
            return Err(invalid(format!(
                "The parameter {what} must be a time between 1970 and 9999 (got {t} seconds)."
            )));
        }
    }
    let (start, end) = (
        millis(start.unwrap_or_default()),
        millis(end.unwrap_or_default()),
    );
    if start >= end {
        return Err(invalid(
            "The parameter StartTime must be less than the parameter EndTime.",
        ));
    }
    Ok((start, end))
}

/// Which statistic a name asks for; percentiles and trimmed means need the samples
/// themselves, and Berth keeps statistic sets.
fn statistic(what: &str, name: &str) -> Result<Statistic, EcsError> {
    Statistic::parse(name).ok_or_else(|| {
        invalid(format!(
            "The value {name} for parameter {what} is not available: Berth keeps statistic sets (SampleCount, Average, Sum, Minimum, Maximum), not the samples that percentiles and trimmed statistics need."
        ))
    })
}

impl Control {
    fn metric_store(&self) -> Result<std::sync::Arc<berth_cloudwatch::MetricStore>, EcsError> {
        self.cloudwatch.clone().ok_or_else(|| {
            EcsError::new(
                ErrorKind::InternalServiceFault,
                "this server was started without a metric store",
            )
        })
    }

    /// Answers one CloudWatch request.
    pub async fn handle_cloudwatch(
        &self,
        caller: &Caller,
        request: CloudWatchRequest,
        wire: Wire,
    ) -> Result<Vec<u8>, EcsError> {
        if let Some(instance) = &caller.instance {
            return Err(EcsError::new(
                ErrorKind::AccessDenied,
                format!("the key of the agent of {instance} may only speak the agent protocol"),
            ));
        }
        let store = self.metric_store()?;
        let now = crate::now_millis();
        match request {
            CloudWatchRequest::PutMetricData(r) => {
                let namespace = r.namespace.unwrap_or_default();
                check_namespace("Namespace", &namespace)?;
                if namespace.starts_with("AWS/") {
                    return Err(invalid(format!(
                        "The value {namespace} for parameter Namespace is invalid."
                    )));
                }
                if r.entity_metric_data.as_ref().is_some_and(|e| !e.is_empty()) {
                    return Err(invalid(
                        "EntityMetricData is not supported by Berth: there are no entities to relate metrics to; send the datums in MetricData.",
                    ));
                }
                let data = r.metric_data.unwrap_or_default();
                if data.is_empty() {
                    return Err(EcsError::new(
                        ErrorKind::MissingParameter,
                        "The parameter MetricData is required.",
                    ));
                }
                if data.len() > MAX_PUT_DATA {
                    return Err(invalid(format!(
                        "The collection MetricData must not have a size greater than {MAX_PUT_DATA}."
                    )));
                }
                let datums = data
                    .iter()
                    .enumerate()
                    .map(|(i, d)| datum(&namespace, i + 1, d, now))
                    .collect::<Result<Vec<_>, _>>()?;
                blocking(move || store.put(&datums, now, true).map_err(metric_error)).await?;
                // No output: Smithy RPC v2 answers with an empty body, JSON 1.0 with `{}`.
                Ok(match wire {
                    Wire::Cbor => Vec::new(),
                    Wire::Json => b"{}".to_vec(),
                })
            }
            CloudWatchRequest::GetMetricStatistics(r) => {
                let namespace = r.namespace.unwrap_or_default();
                check_namespace("Namespace", &namespace)?;
                let name = r.metric_name.unwrap_or_default();
                check_name("MetricName", &name, 255)?;
                let dims = dimensions(r.dimensions.as_ref(), "Dimensions")?;
                let period = check_period("Period", r.period.unwrap_or_default())?;
                let (start, end) = time_range(r.start_time, r.end_time)?;
                if r.extended_statistics
                    .as_ref()
                    .is_some_and(|e| !e.is_empty())
                {
                    let first = r
                        .extended_statistics
                        .as_ref()
                        .and_then(|e| e.first())
                        .cloned()
                        .unwrap_or_default();
                    return Err(statistic("ExtendedStatistics", &first)
                        .err()
                        .unwrap_or_else(|| invalid("ExtendedStatistics must name percentiles")));
                }
                let wanted = r.statistics.unwrap_or_default();
                if wanted.is_empty() {
                    return Err(combination(
                        "Must specify either Statistics or ExtendedStatistics",
                    ));
                }
                let stats = wanted
                    .iter()
                    .map(|s| statistic("Statistics", s))
                    .collect::<Result<Vec<_>, _>>()?;
                let p = i128::from(period) * 1000;
                let points = (i128::from(end) - i128::from(start) + p - 1) / p;
                if points > i128::from(MAX_STAT_POINTS) {
                    return Err(combination(format!(
                        "You have requested up to {points} datapoints, which exceeds the limit of 1,440. You may reduce the datapoints requested by increasing Period, or decreasing the time range."
                    )));
                }
                let unit = unit(r.unit.as_deref(), "Unit")?;
                let key = SeriesKey::new(&namespace, &name, dims);
                let rows =
                    blocking(move || Ok(store.statistics(&key, start, end, period, unit))).await?;
                let datapoints = rows
                    .into_iter()
                    .map(|(t, u, s)| {
                        let mut d = Datapoint {
                            timestamp: Some(seconds(t)),
                            unit: Some(u.as_str().to_string()),
                            ..Default::default()
                        };
                        for st in &stats {
                            let v = Some(st.value(&s));
                            match st {
                                Statistic::SampleCount => d.sample_count = v,
                                Statistic::Average => d.average = v,
                                Statistic::Sum => d.sum = v,
                                Statistic::Minimum => d.minimum = v,
                                Statistic::Maximum => d.maximum = v,
                            }
                        }
                        d
                    })
                    .collect();
                wire.encode(&GetMetricStatisticsOutput {
                    label: Some(name),
                    datapoints: Some(datapoints),
                })
            }
            CloudWatchRequest::GetMetricData(r) => {
                let queries = r.metric_data_queries.clone().unwrap_or_default();
                if queries.is_empty() || queries.len() > MAX_QUERIES {
                    return Err(invalid(format!(
                        "The collection MetricDataQueries must hold 1 to {MAX_QUERIES} queries."
                    )));
                }
                let (start, end) = time_range(r.start_time, r.end_time)?;
                let descending = match r.scan_by.as_deref() {
                    None | Some("TimestampDescending") => true,
                    Some("TimestampAscending") => false,
                    Some(other) => {
                        return Err(invalid(format!(
                            "The value {other} for parameter ScanBy is not one of TimestampDescending, TimestampAscending."
                        )))
                    }
                };
                let max = match r.max_datapoints {
                    None => MAX_DATA_POINTS as usize,
                    Some(n) if n > 0 => n.min(MAX_DATA_POINTS) as usize,
                    Some(n) => {
                        return Err(invalid(format!(
                            "The value {n} for parameter MaxDatapoints is invalid: it must be positive."
                        )))
                    }
                };
                let asks = queries
                    .iter()
                    .enumerate()
                    .map(|(i, q)| self.metric_query(i, q))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut ids = std::collections::BTreeSet::new();
                for a in &asks {
                    if !ids.insert(a.id.clone()) {
                        return Err(invalid(format!(
                            "The value {} for parameter MetricDataQueries.member.Id is duplicated.",
                            a.id
                        )));
                    }
                }
                let fingerprint = request_fingerprint(&r);
                let resume = resume_point(r.next_token.as_deref(), &fingerprint, asks.len())?;
                let (results, next) = blocking(move || {
                    Ok(metric_data_page(
                        &store, &asks, start, end, descending, max, resume,
                    ))
                })
                .await?;
                wire.encode(&GetMetricDataOutput {
                    metric_data_results: Some(results),
                    next_token: next.map(|(q, after)| {
                        let after = after.map_or_else(|| "-".to_string(), |t| t.to_string());
                        format!("gmd/{fingerprint}/{q}/{after}")
                    }),
                    messages: Some(Vec::new()),
                })
            }
            CloudWatchRequest::ListMetrics(r) => {
                let mut filter = ListFilter {
                    namespace: r.namespace.clone(),
                    metric_name: r.metric_name.clone(),
                    dimensions: Vec::new(),
                };
                if let Some(ns) = &r.namespace {
                    check_namespace("Namespace", ns)?;
                }
                let dims = r.dimensions.clone().unwrap_or_default();
                if dims.len() > 10 {
                    return Err(invalid(
                        "The collection Dimensions must not have a size greater than 10.",
                    ));
                }
                for (i, d) in dims.iter().enumerate() {
                    let name = d.name.clone().unwrap_or_default();
                    check_name(&format!("Dimensions.member.{}.Name", i + 1), &name, 255)?;
                    filter.dimensions.push((name, d.value.clone()));
                }
                let since = match r.recently_active.as_deref() {
                    None => None,
                    Some("PT3H") => Some(now - RECENT_MS),
                    Some(other) => {
                        return Err(invalid(format!(
                            "The value {other} for parameter RecentlyActive is invalid: the only value is PT3H."
                        )))
                    }
                };
                // A page resumes after the last metric of the one before: metrics that come
                // or go meanwhile never shift it.
                let after: Option<SeriesKey> = match r.next_token.as_deref() {
                    None => None,
                    Some(t) => Some(
                        t.strip_prefix("lm/")
                            .and_then(|h| hex::decode(h).ok())
                            .and_then(|b| {
                                serde_json::from_slice::<(String, String, Vec<(String, String)>)>(
                                    &b,
                                )
                                .ok()
                            })
                            .map(|(ns, name, dims)| SeriesKey::new(ns, name, dims))
                            .ok_or_else(|| bad_token(t))?,
                    ),
                };
                let ours = r
                    .owning_account
                    .as_deref()
                    .is_none_or(|a| a == self.config.account_id);
                let mut page: Vec<SeriesKey> = if ours {
                    blocking(move || {
                        Ok(store
                            .list(&filter, since)
                            .into_iter()
                            .filter(|k| after.as_ref().is_none_or(|a| k > a))
                            .take(LIST_PAGE + 1)
                            .collect())
                    })
                    .await?
                } else {
                    Vec::new()
                };
                let more = page.len() > LIST_PAGE;
                page.truncate(LIST_PAGE);
                let next_token = more.then(|| page.last()).flatten().map(|k| {
                    let key = (&k.namespace, &k.metric_name, &k.dimensions);
                    format!(
                        "lm/{}",
                        hex::encode(serde_json::to_vec(&key).unwrap_or_default())
                    )
                });
                let linked = r.include_linked_accounts == Some(true);
                let metrics: Vec<Metric> = page
                    .into_iter()
                    .map(|k| Metric {
                        namespace: Some(k.namespace),
                        metric_name: Some(k.metric_name),
                        dimensions: Some(
                            k.dimensions
                                .into_iter()
                                .map(|(n, v)| Dimension {
                                    name: Some(n),
                                    value: Some(v),
                                })
                                .collect(),
                        ),
                    })
                    .collect();
                wire.encode(&ListMetricsOutput {
                    owning_accounts: linked
                        .then(|| vec![self.config.account_id.clone(); metrics.len()]),
                    metrics: Some(metrics),
                    next_token,
                })
            }
        }
    }

    /// One GetMetricData query, checked: what to read and how to label it.
    fn metric_query(&self, i: usize, q: &MetricDataQuery) -> Result<Ask, EcsError> {
        let at = format!("MetricDataQueries.member.{}", i + 1);
        let id = q.id.clone().unwrap_or_default();
        let mut chars = id.chars();
        if !chars.next().is_some_and(|c| c.is_ascii_lowercase())
            || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            || id.len() > 255
        {
            return Err(invalid(format!(
                "The value {id} for parameter {at}.Id is invalid: it must start with a lowercase letter and hold only letters, digits and underscores."
            )));
        }
        if q.expression.is_some() {
            return Err(invalid(format!(
                "The parameter {at}.Expression is not supported by Berth yet: metric math is not implemented; ask for each metric with MetricStat."
            )));
        }
        if q.account_id
            .as_deref()
            .is_some_and(|a| a != self.config.account_id)
        {
            return Err(invalid(format!(
                "The value for parameter {at}.AccountId is invalid: this server holds account {} only.",
                self.config.account_id
            )));
        }
        let Some(ms) = &q.metric_stat else {
            return Err(combination(format!(
                "Exactly one of the parameters {at}.MetricStat and {at}.Expression must be specified."
            )));
        };
        let metric = ms.metric.clone().unwrap_or_default();
        let namespace = metric.namespace.unwrap_or_default();
        check_namespace(&format!("{at}.MetricStat.Metric.Namespace"), &namespace)?;
        let name = metric.metric_name.unwrap_or_default();
        check_name(&format!("{at}.MetricStat.Metric.MetricName"), &name, 255)?;
        let dims = dimensions(
            metric.dimensions.as_ref(),
            &format!("{at}.MetricStat.Metric.Dimensions"),
        )?;
        let period = check_period(
            &format!("{at}.MetricStat.Period"),
            ms.period.unwrap_or_default(),
        )?;
        let stat = statistic(
            &format!("{at}.MetricStat.Stat"),
            ms.stat.as_deref().unwrap_or_default(),
        )?;
        let unit = unit(ms.unit.as_deref(), &format!("{at}.MetricStat.Unit"))?;
        Ok(Ask {
            id,
            label: q.label.clone().unwrap_or_else(|| name.clone()),
            key: SeriesKey::new(&namespace, &name, dims),
            period,
            stat,
            unit,
            returned: q.return_data != Some(false),
        })
    }
}

/// A GetMetricData query, checked.
#[derive(Debug, Clone)]
struct Ask {
    id: String,
    label: String,
    key: SeriesKey,
    period: i64,
    stat: Statistic,
    unit: Option<Unit>,
    /// `ReturnData`: false leaves it out of the answer.
    returned: bool,
}

fn bad_token(t: &str) -> EcsError {
    EcsError::new(
        ErrorKind::InvalidNextToken,
        format!("The service returned an invalid next token: {t}"),
    )
}

/// What ties a GetMetricData NextToken to its request: the queries, times and order.
fn request_fingerprint(r: &GetMetricDataInput) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let queries = serde_json::to_vec(&r.metric_data_queries).unwrap_or_default();
    h.update(&queries);
    h.update(format!(
        "{:?}/{:?}/{:?}/{:?}",
        r.start_time, r.end_time, r.scan_by, r.max_datapoints
    ));
    hex::encode(&h.finalize()[..8])
}

/// Where a page resumes: the query, and the last timestamp already returned of it.
type Resume = (usize, Option<i64>);

fn resume_point(
    token: Option<&str>,
    fingerprint: &str,
    queries: usize,
) -> Result<Resume, EcsError> {
    let Some(t) = token else {
        return Ok((0, None));
    };
    let mut parts = t
        .strip_prefix("gmd/")
        .ok_or_else(|| bad_token(t))?
        .split('/');
    let (Some(fp), Some(q), Some(after), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad_token(t));
    };
    let q: usize = q.parse().map_err(|_| bad_token(t))?;
    let after = match after {
        "-" => None,
        n => Some(n.parse::<i64>().map_err(|_| bad_token(t))?),
    };
    if fp != fingerprint || q >= queries {
        return Err(bad_token(t));
    }
    Ok((q, after))
}

/// One page of GetMetricData: every query's result in order, at most `max` datapoints in all,
/// from `resume` on; and where the next page resumes, if anything is left. Queries past the
/// one a page ends in are not read (their values come on later pages).
fn metric_data_page(
    store: &berth_cloudwatch::MetricStore,
    asks: &[Ask],
    start: i64,
    end: i64,
    descending: bool,
    max: usize,
    (from_query, after): Resume,
) -> (Vec<MetricDataResult>, Option<Resume>) {
    let mut results = Vec::new();
    let mut room = max;
    let mut next: Option<Resume> = None;
    for (i, a) in asks.iter().enumerate() {
        let mut rows: Vec<(i64, f64)> = Vec::new();
        if i >= from_query && next.is_none() {
            rows = merge_units(store.statistics(&a.key, start, end, a.period, a.unit))
                .into_iter()
                .map(|(t, s)| (t, a.stat.value(&s)))
                .collect();
            if descending {
                rows.reverse();
            }
            if i == from_query {
                if let Some(after) = after {
                    rows.retain(|(t, _)| if descending { *t < after } else { *t > after });
                }
            }
            if !a.returned {
                rows.clear();
            }
            if rows.len() > room {
                rows.truncate(room);
                let resumed =
                    rows.last()
                        .map(|(t, _)| *t)
                        .or(if i == from_query { after } else { None });
                next = Some((i, resumed));
            }
            room -= rows.len();
        }
        if !a.returned {
            continue;
        }
        let partial = next.is_some_and(|(q, _)| q <= i);
        results.push(MetricDataResult {
            id: Some(a.id.clone()),
            label: Some(a.label.clone()),
            timestamps: Some(rows.iter().map(|(t, _)| seconds(*t)).collect()),
            values: Some(rows.iter().map(|(_, v)| *v).collect()),
            status_code: Some(if partial { "PartialData" } else { "Complete" }.into()),
            messages: None,
        });
    }
    (results, next)
}

/// GetMetricData answers one value per period: figures in different units of one period are
/// combined (CloudWatch's GetMetricStatistics keeps them apart; GetMetricData cannot).
fn merge_units(rows: Vec<(i64, Unit, Stats)>) -> Vec<(i64, Stats)> {
    let mut out: Vec<(i64, Stats)> = Vec::with_capacity(rows.len());
    for (t, _, s) in rows {
        match out.last_mut() {
            Some((lt, ls)) if *lt == t => ls.merge(s),
            _ => out.push((t, s)),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn put(d: MetricDatum) -> Result<Datum, EcsError> {
        datum("App", 1, &d, 1_000_000)
    }

    #[test]
    fn a_datum_is_one_of_value_statistics_or_values() {
        let d = put(MetricDatum {
            metric_name: Some("Latency".into()),
            values: Some(vec![1.0, 3.0]),
            counts: Some(vec![2.0, 1.0]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (d.stats.sum, d.stats.count, d.stats.min, d.stats.max),
            (5.0, 3.0, 1.0, 3.0),
            "Values with Counts weigh each value"
        );
        assert_eq!(d.timestamp_ms, 1_000_000, "no Timestamp: now");
        let e = put(MetricDatum {
            metric_name: Some("x".into()),
            value: Some(1.0),
            values: Some(vec![1.0]),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParameterCombination, "{e}");
        let e = put(MetricDatum {
            metric_name: Some("x".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParameterCombination, "{e}");
        let e = put(MetricDatum {
            metric_name: Some("x".into()),
            values: Some(vec![1.0, 2.0]),
            counts: Some(vec![1.0]),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidParameterCombination, "{e}");
    }

    #[test]
    fn bad_values_names_and_units_are_refused() {
        let base = MetricDatum {
            metric_name: Some("x".into()),
            value: Some(1.0),
            ..Default::default()
        };
        for (d, says) in [
            (
                MetricDatum {
                    value: Some(1e200),
                    ..base.clone()
                },
                "MetricData.member.1.Value",
            ),
            (
                MetricDatum {
                    unit: Some("Furlongs".into()),
                    ..base.clone()
                },
                "Unit",
            ),
            (
                MetricDatum {
                    storage_resolution: Some(30),
                    ..base.clone()
                },
                "StorageResolution",
            ),
            (
                MetricDatum {
                    dimensions: Some(vec![
                        Dimension {
                            name: Some("a".into()),
                            value: Some("1".into()),
                        },
                        Dimension {
                            name: Some("a".into()),
                            value: Some("2".into()),
                        },
                    ]),
                    ..base.clone()
                },
                "the same dimension twice",
            ),
            (
                MetricDatum {
                    metric_name: Some(String::new()),
                    ..base.clone()
                },
                "MetricName",
            ),
        ] {
            let e = put(d).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidParameterValue, "{e}");
            assert!(e.message.contains(says), "{} should name {says}", e.message);
        }
    }

    #[test]
    fn periods_and_statistics() {
        assert!(check_period("Period", 60).is_ok());
        assert!(check_period("Period", 1).is_ok());
        assert!(check_period("Period", 300).is_ok());
        assert!(check_period("Period", 90).is_err());
        assert!(check_period("Period", 0).is_err());
        assert!(statistic("Stat", "Average").is_ok());
        let e = statistic("Stat", "p99").unwrap_err();
        assert!(e.message.contains("p99"), "{}", e.message);
        assert_eq!(resume_point(None, "f", 2).unwrap(), (0, None));
        assert_eq!(
            resume_point(Some("gmd/f/1/60000"), "f", 2).unwrap(),
            (1, Some(60000))
        );
        assert_eq!(resume_point(Some("gmd/f/0/-"), "f", 2).unwrap(), (0, None));
        for bad in [
            "gmd/g/1/6",
            "gmd/f/2/6",
            "gmd/f/1",
            "gmd/f/1/x",
            "lm/7",
            "gmd/f/1/6/7",
        ] {
            let e = resume_point(Some(bad), "f", 2).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidNextToken, "{bad}");
        }
    }

    #[test]
    fn units_of_one_period_merge() {
        let s = Stats::from_value(1.0);
        let rows = merge_units(vec![
            (0, Unit::Count, s),
            (0, Unit::None, s),
            (60, Unit::Count, s),
        ]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1.count, 2.0);
    }
}
