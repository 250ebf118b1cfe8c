//! CloudWatch Logs on the shared port: one exhaustive `match` over [`LogsRequest`], each arm
//! a call into the [`LogStore`] on a blocking thread, its answer in Logs' shapes and its errors
//! in Logs' words. Agents ship container output through [`Control::agent_logs`], the same
//! store with the producer's cursor, so a resent batch is stored once.

use crate::{json, Caller, Control};
use berth_agent_proto as agent_proto;
use berth_api::logs::*;
use berth_api::{EcsError, ErrorKind};
use berth_logs::pattern::Pattern;
use berth_logs::store::{limits, GroupInfo, StreamInfo};
use berth_logs::{Bound, Found, InputEvent, Key, LogError, LogStore, Query};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Events per GetLogEvents / FilterLogEvents answer, and its size (Logs' own limits).
const MAX_EVENTS: i32 = 10_000;
const MAX_RESPONSE_BYTES: usize = 1_048_576;
/// FilterLogEvents reads newest first only from 2024 on (Logs' own rule).
const NEWEST_FIRST_SINCE_MS: i64 = 1_704_067_200_000;
/// Tags a log group may carry.
const MAX_TAGS: usize = 50;
/// Streams FilterLogEvents may name.
const MAX_FILTER_STREAMS: usize = 100;

fn log_error(e: LogError) -> EcsError {
    let kind = match &e {
        LogError::GroupNotFound | LogError::StreamNotFound | LogError::FilterNotFound => {
            ErrorKind::ResourceNotFound
        }
        LogError::Limit(_) => ErrorKind::LimitExceeded,
        LogError::TooManyTags(_) => ErrorKind::TooManyTags,
        LogError::GroupExists | LogError::StreamExists => ErrorKind::ResourceAlreadyExists,
        LogError::Invalid(_) => ErrorKind::InvalidParameter,
        LogError::Io { .. } => {
            tracing::error!(error = ?e, "log storage failed");
            ErrorKind::ServiceUnavailable
        }
    };
    EcsError::new(kind, e.to_string())
}

fn now_ms() -> i64 {
    crate::now_millis()
}

/// `{}`: what Logs answers for operations without output.
fn empty() -> Result<Vec<u8>, EcsError> {
    Ok(b"{}".to_vec())
}

fn limit(value: Option<i32>, max: i32, what: &str) -> Result<usize, EcsError> {
    match value {
        None => Ok(max as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(EcsError::invalid(format!(
            "1 validation error detected: Value '{n}' at '{what}' failed to satisfy constraint: Member must have value {}",
            if n < 1 { "greater than or equal to 1".to_string() } else { format!("less than or equal to {max}") }
        ))),
    }
}

/// An event position as a token: `f/` (read on after it) or `b/` (read on before it).
fn token(dir: char, k: Key) -> String {
    format!("{dir}/{}/{}/{}", k.timestamp, k.stream, k.seq)
}

fn parse_token(t: &str) -> Result<Bound, EcsError> {
    let bad = || EcsError::invalid(format!("The specified nextToken is invalid: '{t}'"));
    let mut parts = t.split('/');
    let dir = parts.next().ok_or_else(bad)?;
    let mut num = || parts.next().ok_or_else(bad);
    let key = Key {
        timestamp: num()?.parse().map_err(|_| bad())?,
        stream: num()?.parse().map_err(|_| bad())?,
        seq: num()?.parse().map_err(|_| bad())?,
    };
    match dir {
        "f" => Ok(Bound::After(key)),
        "b" => Ok(Bound::Before(key)),
        _ => Err(bad()),
    }
}

const FIRST: Key = Key {
    timestamp: i64::MIN,
    stream: 0,
    seq: 0,
};
const LAST: Key = Key {
    timestamp: i64::MAX,
    stream: u64::MAX,
    seq: u64::MAX,
};

impl Control {
    fn log_store(&self) -> Result<Arc<LogStore>, EcsError> {
        self.logs.clone().ok_or_else(|| {
            EcsError::new(
                ErrorKind::UnknownOperation,
                "this server keeps no logs (it was started without a log store)",
            )
        })
    }

    /// Runs `f` against the log store on a blocking thread.
    async fn with_logs<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LogStore) -> Result<T, EcsError> + Send + 'static,
    ) -> Result<T, EcsError> {
        let logs = self.log_store()?;
        tokio::task::spawn_blocking(move || f(&logs))
            .await
            .map_err(|e| EcsError::server(format!("the log store task failed: {e}")))?
    }

    fn group_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:logs:{}:{}:log-group:{name}",
            self.config.region, self.config.account_id
        )
    }

    /// A group named directly or by ARN (with or without the trailing `:*`).
    fn group_of(
        &self,
        name: Option<String>,
        identifier: Option<String>,
    ) -> Result<String, EcsError> {
        match (name, identifier) {
            (Some(_), Some(_)) => Err(EcsError::invalid(
                "LogGroup name and LogGroup ARN are mutually exclusive parameters.",
            )),
            (Some(n), None) => Ok(n),
            (None, Some(id)) => Ok(self.group_from_arn(&id).unwrap_or(id)),
            (None, None) => Err(EcsError::invalid(
                "Should provide either name or ARN of the log group.",
            )),
        }
    }

    fn group_from_arn(&self, arn: &str) -> Option<String> {
        let prefix = format!(
            "arn:aws:logs:{}:{}:log-group:",
            self.config.region, self.config.account_id
        );
        let name = arn.strip_prefix(&prefix)?;
        Some(name.strip_suffix(":*").unwrap_or(name).to_string())
    }

    fn group_wire(&self, g: GroupInfo) -> LogGroup {
        let arn = self.group_arn(&g.name);
        LogGroup {
            arn: Some(format!("{arn}:*")),
            log_group_arn: Some(arn),
            creation_time: Some(g.created),
            log_group_name: Some(g.name),
            metric_filter_count: Some(g.metric_filter_count as i32),
            retention_in_days: g.retention_days,
            stored_bytes: Some(g.stored_bytes as i64),
            log_group_class: Some("STANDARD".into()),
            data_protection_status: None,
            inherited_properties: None,
            kms_key_id: None,
            deletion_protection_enabled: Some(false),
            bearer_token_authentication_enabled: None,
            retention_policy_name: None,
        }
    }

    fn stream_wire(&self, group: &str, s: StreamInfo) -> LogStream {
        LogStream {
            arn: Some(format!("{}:log-stream:{}", self.group_arn(group), s.name)),
            creation_time: Some(s.created),
            first_event_timestamp: s.first_event,
            last_event_timestamp: s.last_event,
            last_ingestion_time: s.last_ingestion,
            log_stream_name: Some(s.name),
            stored_bytes: Some(s.stored_bytes as i64),
            upload_sequence_token: None,
        }
    }

    /// One CloudWatch Logs request.
    pub async fn handle_logs(
        &self,
        caller: &Caller,
        req: LogsRequest,
    ) -> Result<Vec<u8>, EcsError> {
        if let Some(instance) = &caller.instance {
            return Err(EcsError::new(
                ErrorKind::AccessDenied,
                format!("the key of the agent of {instance} may only speak the agent protocol"),
            ));
        }
        match req {
            LogsRequest::CreateLogGroup(r) => self.create_log_group(r).await,
            LogsRequest::DeleteLogGroup(r) => {
                let name = r.log_group_name.unwrap_or_default();
                self.with_logs(move |l| l.delete_group(&name).map_err(log_error))
                    .await?;
                empty()
            }
            LogsRequest::DescribeLogGroups(r) => json(self.describe_log_groups(r).await?),
            LogsRequest::CreateLogStream(r) => {
                let (g, s) = (
                    r.log_group_name.unwrap_or_default(),
                    r.log_stream_name.unwrap_or_default(),
                );
                self.with_logs(move |l| l.create_stream(&g, &s, now_ms()).map_err(log_error))
                    .await?;
                empty()
            }
            LogsRequest::DeleteLogStream(r) => {
                let (g, s) = (
                    r.log_group_name.unwrap_or_default(),
                    r.log_stream_name.unwrap_or_default(),
                );
                self.with_logs(move |l| l.delete_stream(&g, &s).map_err(log_error))
                    .await?;
                empty()
            }
            LogsRequest::DescribeLogStreams(r) => json(self.describe_log_streams(r).await?),
            LogsRequest::PutLogEvents(r) => json(self.put_log_events(r).await?),
            LogsRequest::GetLogEvents(r) => json(self.get_log_events(r).await?),
            LogsRequest::FilterLogEvents(r) => json(self.filter_log_events(r).await?),
            LogsRequest::PutRetentionPolicy(r) => {
                let name = r.log_group_name.unwrap_or_default();
                let days = r.retention_in_days;
                self.with_logs(move |l| l.set_retention(&name, days).map_err(log_error))
                    .await?;
                empty()
            }
            LogsRequest::DeleteRetentionPolicy(r) => {
                let name = r.log_group_name.unwrap_or_default();
                self.with_logs(move |l| l.set_retention(&name, None).map_err(log_error))
                    .await?;
                empty()
            }
            LogsRequest::TagLogGroup(r) => {
                self.retag(
                    r.log_group_name.unwrap_or_default(),
                    r.tags.unwrap_or_default(),
                    vec![],
                )
                .await?;
                empty()
            }
            LogsRequest::UntagLogGroup(r) => {
                self.retag(
                    r.log_group_name.unwrap_or_default(),
                    BTreeMap::new(),
                    r.tags.unwrap_or_default(),
                )
                .await?;
                empty()
            }
            LogsRequest::ListTagsLogGroup(r) => {
                let name = r.log_group_name.unwrap_or_default();
                let g = self
                    .with_logs(move |l| l.group_info(&name).map_err(log_error))
                    .await?;
                json(ListTagsLogGroupResponse { tags: Some(g.tags) })
            }
            LogsRequest::TagResource(r) => {
                let name = self.tagged_group(r.resource_arn.as_deref().unwrap_or_default())?;
                self.retag(name, r.tags.unwrap_or_default(), vec![]).await?;
                empty()
            }
            LogsRequest::UntagResource(r) => {
                let name = self.tagged_group(r.resource_arn.as_deref().unwrap_or_default())?;
                self.retag(name, BTreeMap::new(), r.tag_keys.unwrap_or_default())
                    .await?;
                empty()
            }
            LogsRequest::ListTagsForResource(r) => {
                let name = self.tagged_group(r.resource_arn.as_deref().unwrap_or_default())?;
                let g = self
                    .with_logs(move |l| l.group_info(&name).map_err(log_error))
                    .await?;
                json(ListTagsForResourceResponse { tags: Some(g.tags) })
            }
            LogsRequest::PutMetricFilter(r) => {
                if r.apply_on_transformed_logs == Some(true) {
                    return Err(EcsError::invalid(
                        "applyOnTransformedLogs is not supported by Berth: log groups have no transformers",
                    ));
                }
                if r.emit_system_field_dimensions
                    .as_ref()
                    .is_some_and(|e| !e.is_empty())
                    || r.field_selection_criteria
                        .as_ref()
                        .is_some_and(|c| !c.is_empty())
                {
                    return Err(EcsError::invalid(
                        "emitSystemFieldDimensions and fieldSelectionCriteria are not supported by Berth yet",
                    ));
                }
                let transformations = r
                    .metric_transformations
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| {
                        if let Some(u) = t.unit.as_deref() {
                            berth_api::error::check_enum(
                                "metricTransformations.unit",
                                u,
                                berth_api::logs::enums::STANDARD_UNIT,
                            )?;
                        }
                        Ok(berth_logs::Transformation {
                            metric_name: t.metric_name.unwrap_or_default(),
                            metric_namespace: t.metric_namespace.unwrap_or_default(),
                            metric_value: t.metric_value.unwrap_or_default(),
                            default_value: t.default_value,
                            dimensions: t.dimensions.unwrap_or_default(),
                            unit: t.unit,
                        })
                    })
                    .collect::<Result<Vec<_>, EcsError>>()?;
                let group = r.log_group_name.unwrap_or_default();
                let filter = berth_logs::MetricFilter::new(
                    r.filter_name.as_deref().unwrap_or_default(),
                    r.filter_pattern.as_deref().unwrap_or_default(),
                    now_ms(),
                    transformations,
                )
                .map_err(log_error)?;
                self.with_logs(move |l| l.put_metric_filter(&group, filter).map_err(log_error))
                    .await?;
                empty()
            }
            LogsRequest::DeleteMetricFilter(r) => {
                let group = r.log_group_name.unwrap_or_default();
                let name = r.filter_name.unwrap_or_default();
                self.with_logs(move |l| l.delete_metric_filter(&group, &name).map_err(log_error))
                    .await?;
                empty()
            }
            LogsRequest::DescribeMetricFilters(r) => {
                let limit = limit(r.limit, 50, "limit")?;
                if r.filter_name_prefix.is_some() && r.log_group_name.is_none() {
                    return Err(EcsError::invalid(
                        "The parameter filterNamePrefix requires logGroupName.",
                    ));
                }
                if r.metric_name.is_some() != r.metric_namespace.is_some() {
                    return Err(EcsError::invalid(
                        "The parameters metricName and metricNamespace must be given together.",
                    ));
                }
                let group = r.log_group_name.clone();
                let all = self
                    .with_logs(move |l| match group {
                        Some(g) => Ok(l
                            .metric_filters(&g)
                            .map_err(log_error)?
                            .into_iter()
                            .map(|f| (g.clone(), f))
                            .collect::<Vec<_>>()),
                        None => Ok(l.all_metric_filters()),
                    })
                    .await?;
                let after = r.next_token.clone();
                let mut page: Vec<MetricFilter> = Vec::new();
                let mut next = None;
                for (group, f) in all {
                    let token = format!("{group}\u{1f}{}", f.name);
                    if after.as_ref().is_some_and(|a| token <= *a) {
                        continue;
                    }
                    if r.filter_name_prefix
                        .as_ref()
                        .is_some_and(|p| !f.name.starts_with(p.as_str()))
                    {
                        continue;
                    }
                    if let (Some(n), Some(ns)) = (&r.metric_name, &r.metric_namespace) {
                        if !f
                            .transformations
                            .iter()
                            .any(|t| t.metric_name == *n && t.metric_namespace == *ns)
                        {
                            continue;
                        }
                    }
                    if page.len() == limit {
                        next = page.last().map(|p: &MetricFilter| {
                            format!(
                                "{}\u{1f}{}",
                                p.log_group_name.as_deref().unwrap_or_default(),
                                p.filter_name.as_deref().unwrap_or_default()
                            )
                        });
                        break;
                    }
                    page.push(MetricFilter {
                        filter_name: Some(f.name.clone()),
                        filter_pattern: Some(f.pattern_text.clone()),
                        log_group_name: Some(group.clone()),
                        creation_time: Some(f.created),
                        apply_on_transformed_logs: Some(false),
                        emit_system_field_dimensions: None,
                        field_selection_criteria: None,
                        metric_transformations: Some(
                            f.transformations
                                .iter()
                                .map(|t| MetricTransformation {
                                    metric_name: Some(t.metric_name.clone()),
                                    metric_namespace: Some(t.metric_namespace.clone()),
                                    metric_value: Some(t.metric_value.clone()),
                                    default_value: t.default_value,
                                    dimensions: (!t.dimensions.is_empty())
                                        .then(|| t.dimensions.clone()),
                                    unit: t.unit.clone(),
                                })
                                .collect(),
                        ),
                    });
                }
                json(DescribeMetricFiltersResponse {
                    metric_filters: Some(page),
                    next_token: next,
                })
            }
            LogsRequest::TestMetricFilter(r) => {
                let pattern = parse_pattern(r.filter_pattern.as_deref().unwrap_or_default())?;
                let messages = r.log_event_messages.unwrap_or_default();
                if messages.is_empty() || messages.len() > 50 {
                    return Err(EcsError::invalid(format!(
                        "1 validation error detected: Value at 'logEventMessages' failed to satisfy constraint: Member must have length between 1 and 50 (got {})",
                        messages.len()
                    )));
                }
                let matches = messages
                    .iter()
                    .enumerate()
                    .filter_map(|(i, m)| {
                        let values = pattern.extract(m)?;
                        Some(MetricFilterMatchRecord {
                            event_number: Some(i as i64 + 1),
                            event_message: Some(m.clone()),
                            extracted_values: Some(values),
                        })
                    })
                    .collect();
                json(TestMetricFilterResponse {
                    matches: Some(matches),
                })
            }
        }
    }

    /// The group a tagging ARN names.
    fn tagged_group(&self, arn: &str) -> Result<String, EcsError> {
        self.group_from_arn(arn).ok_or_else(|| {
            EcsError::invalid(format!(
                "The specified resource ARN '{arn}' is not a log group of this account and region."
            ))
        })
    }

    async fn retag(
        &self,
        group: String,
        add: BTreeMap<String, String>,
        remove: Vec<String>,
    ) -> Result<(), EcsError> {
        check_tags(&add)?;
        self.with_logs(move |l| l.retag(&group, &add, &remove, MAX_TAGS).map_err(log_error))
            .await
    }

    async fn create_log_group(&self, r: CreateLogGroupRequest) -> Result<Vec<u8>, EcsError> {
        if r.kms_key_id.is_some() {
            return Err(EcsError::invalid(
                "kmsKeyId is not supported by Berth: log events are kept on the server's disk without KMS.",
            ));
        }
        if r.deletion_protection_enabled == Some(true) {
            return Err(EcsError::invalid(
                "deletionProtectionEnabled is not supported by Berth yet.",
            ));
        }
        if let Some(class) = r.log_group_class.as_deref().filter(|c| *c != "STANDARD") {
            berth_api::error::check_enum("logGroupClass", class, enums::LOG_GROUP_CLASS)?;
            return Err(EcsError::invalid(format!(
                "logGroupClass {class} is not supported by Berth: every log group is STANDARD."
            )));
        }
        let tags = r.tags.unwrap_or_default();
        check_tags(&tags)?;
        if tags.len() > MAX_TAGS {
            return Err(EcsError::new(
                ErrorKind::TooManyTags,
                format!("A resource can have no more than {MAX_TAGS} tags."),
            ));
        }
        let name = r.log_group_name.unwrap_or_default();
        self.with_logs(move |l| l.create_group(&name, now_ms(), tags).map_err(log_error))
            .await?;
        empty()
    }

    async fn describe_log_groups(
        &self,
        r: DescribeLogGroupsRequest,
    ) -> Result<DescribeLogGroupsResponse, EcsError> {
        let n = limit(r.limit, limits::MAX_DESCRIBE as i32, "limit")?;
        if r.log_group_name_prefix.is_some() && r.log_group_name_pattern.is_some() {
            return Err(EcsError::invalid(
                "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.",
            ));
        }
        if r.log_group_identifiers.is_some() {
            return Err(EcsError::invalid(
                "logGroupIdentifiers is not supported by Berth yet; use logGroupNamePrefix.",
            ));
        }
        if let Some(class) = r.log_group_class.as_deref() {
            berth_api::error::check_enum("logGroupClass", class, enums::LOG_GROUP_CLASS)?;
        }
        // Every group is STANDARD and in this account; there are no linked accounts to add.
        let none = r
            .log_group_class
            .as_deref()
            .is_some_and(|c| c != "STANDARD")
            || r.account_identifiers
                .as_ref()
                .is_some_and(|a| !a.contains(&self.config.account_id));
        if none {
            return Ok(DescribeLogGroupsResponse {
                log_groups: Some(Vec::new()),
                next_token: None,
            });
        }
        let after = crate::paging::decode_token(r.next_token.as_deref())?;
        let (prefix, pattern) = (r.log_group_name_prefix, r.log_group_name_pattern);
        let mut groups = self
            .with_logs(move |l| {
                Ok(l.groups(
                    prefix.as_deref(),
                    pattern.as_deref(),
                    after.as_deref(),
                    n + 1,
                ))
            })
            .await?;
        let next_token = (groups.len() > n).then(|| {
            groups.truncate(n);
            crate::paging::token_for(&groups[n - 1].name)
        });
        Ok(DescribeLogGroupsResponse {
            log_groups: Some(groups.into_iter().map(|g| self.group_wire(g)).collect()),
            next_token,
        })
    }

    async fn describe_log_streams(
        &self,
        r: DescribeLogStreamsRequest,
    ) -> Result<DescribeLogStreamsResponse, EcsError> {
        let n = limit(r.limit, limits::MAX_DESCRIBE as i32, "limit")?;
        let group = self.group_of(r.log_group_name, r.log_group_identifier)?;
        let order = r.order_by.as_deref().unwrap_or("LogStreamName");
        berth_api::error::check_enum("orderBy", order, enums::ORDER_BY)?;
        let by_last_event = order == "LastEventTime";
        if by_last_event && r.log_stream_name_prefix.is_some() {
            return Err(EcsError::invalid(
                "Cannot order by LastEventTime with a logStreamNamePrefix.",
            ));
        }
        let offset: usize = match r.next_token.as_deref() {
            None => 0,
            Some(t) => crate::paging::decode_token(Some(t))?
                .and_then(|o| o.parse().ok())
                .ok_or_else(|| {
                    EcsError::invalid(format!("The specified nextToken is invalid: '{t}'"))
                })?,
        };
        let descending = r.descending.unwrap_or(false);
        let prefix = r.log_stream_name_prefix;
        let g = group.clone();
        let streams = self
            .with_logs(move |l| {
                l.streams(&g, prefix.as_deref(), by_last_event, descending)
                    .map_err(log_error)
            })
            .await?;
        let more = streams.len() > offset + n;
        let page: Vec<LogStream> = streams
            .into_iter()
            .skip(offset)
            .take(n)
            .map(|s| self.stream_wire(&group, s))
            .collect();
        Ok(DescribeLogStreamsResponse {
            log_streams: Some(page),
            next_token: more.then(|| crate::paging::token_for(&(offset + n).to_string())),
        })
    }

    async fn put_log_events(
        &self,
        r: PutLogEventsRequest,
    ) -> Result<PutLogEventsResponse, EcsError> {
        if r.entity.is_some() {
            return Err(EcsError::invalid(
                "entity is not supported by Berth: there is no CloudWatch entity explorer.",
            ));
        }
        // Logs ignores sequence tokens since 2023: any or none is accepted.
        let events: Vec<InputEvent> = r
            .log_events
            .unwrap_or_default()
            .into_iter()
            .map(|e| InputEvent {
                timestamp: e.timestamp.unwrap_or_default(),
                message: e.message.unwrap_or_default(),
            })
            .collect();
        let (g, s) = (
            r.log_group_name.unwrap_or_default(),
            r.log_stream_name.unwrap_or_default(),
        );
        let cloudwatch = self.cloudwatch.clone();
        let stored = self
            .with_logs(move |l| {
                let now = now_ms();
                let stored = l.put(&g, &s, &events, None, now).map_err(log_error)?;
                apply_metric_filters(
                    l,
                    cloudwatch.as_deref(),
                    &g,
                    &events[stored.range.clone()],
                    now,
                );
                Ok(stored)
            })
            .await?;
        self.metrics.log_events.inc_by(stored.events as u64);
        self.metrics.log_bytes.inc_by(stored.bytes as u64);
        let rejected = stored.rejected;
        let any = rejected.too_new_start.is_some()
            || rejected.too_old_end.is_some()
            || rejected.expired_end.is_some();
        Ok(PutLogEventsResponse {
            next_sequence_token: None,
            rejected_entity_info: None,
            rejected_log_events_info: any.then(|| RejectedLogEventsInfo {
                too_new_log_event_start_index: rejected.too_new_start.map(|i| i as i32),
                too_old_log_event_end_index: rejected.too_old_end.map(|i| i as i32),
                expired_log_event_end_index: rejected.expired_end.map(|i| i as i32),
            }),
        })
    }

    async fn get_log_events(
        &self,
        r: GetLogEventsRequest,
    ) -> Result<GetLogEventsResponse, EcsError> {
        let n = limit(r.limit, MAX_EVENTS, "limit")?;
        let group = self.group_of(r.log_group_name, r.log_group_identifier)?;
        let stream = r.log_stream_name.unwrap_or_default();
        let given = r.next_token.clone();
        let bound = match r.next_token.as_deref() {
            Some(t) => parse_token(t)?,
            None if r.start_from_head == Some(true) => Bound::Head,
            None => Bound::Tail,
        };
        let (start, end) = time_range(r.start_time, r.end_time)?;
        let found = self
            .with_logs(move |l| {
                let q = Query {
                    start,
                    end,
                    bound,
                    limit: n,
                    max_bytes: MAX_RESPONSE_BYTES,
                    pattern: None,
                    now: now_ms(),
                };
                l.get(&group, &stream, &q).map_err(log_error)
            })
            .await?;
        // With nothing new, the token given comes back, which is how readers know to stop.
        let (forward, backward) = match (found.first(), found.last()) {
            (Some(first), Some(last)) => (token('f', last.key), token('b', first.key)),
            _ => match given {
                Some(t) => (t.clone(), t),
                None => (token('f', FIRST), token('b', LAST)),
            },
        };
        Ok(GetLogEventsResponse {
            events: Some(
                found
                    .into_iter()
                    .map(|f| OutputLogEvent {
                        timestamp: Some(f.event.timestamp),
                        ingestion_time: Some(f.event.ingestion),
                        message: Some(f.event.message),
                    })
                    .collect(),
            ),
            next_forward_token: Some(forward),
            next_backward_token: Some(backward),
        })
    }

    async fn filter_log_events(
        &self,
        r: FilterLogEventsRequest,
    ) -> Result<FilterLogEventsResponse, EcsError> {
        let n = limit(r.limit, MAX_EVENTS, "limit")?;
        let group = self.group_of(r.log_group_name, r.log_group_identifier)?;
        if r.log_stream_names.is_some() && r.log_stream_name_prefix.is_some() {
            return Err(EcsError::invalid(
                "Cannot specify both logStreamNames and logStreamNamePrefix.",
            ));
        }
        if let Some(names) = &r.log_stream_names {
            if names.is_empty() || names.len() > MAX_FILTER_STREAMS {
                return Err(EcsError::invalid(format!(
                    "1 validation error detected: Value at 'logStreamNames' failed to satisfy constraint: Member must have length between 1 and {MAX_FILTER_STREAMS}"
                )));
            }
        }
        let pattern = match r.filter_pattern.as_deref() {
            Some(p) => Some(parse_pattern(p)?),
            None => None,
        };
        // startFromHead false reads newest first; a token keeps its own direction.
        if r.start_from_head == Some(false)
            && r.next_token.is_none()
            && r.start_time.is_some_and(|t| t < NEWEST_FIRST_SINCE_MS)
        {
            return Err(EcsError::invalid(
                "Setting startFromHead to false is supported only when startTime is on or after Jan 1, 2024 00:00:00 UTC.",
            ));
        }
        let bound = match r.next_token.as_deref() {
            Some(t) => parse_token(t)?,
            None if r.start_from_head == Some(false) => Bound::Tail,
            None => Bound::Head,
        };
        let newest_first = matches!(bound, Bound::Tail | Bound::Before(_));
        let (start, end) = time_range(r.start_time, r.end_time)?;
        let (names, prefix) = (r.log_stream_names, r.log_stream_name_prefix);
        let found: Vec<Found> = self
            .with_logs(move |l| {
                let q = Query {
                    start,
                    end,
                    bound,
                    limit: n,
                    max_bytes: MAX_RESPONSE_BYTES,
                    pattern: pattern.as_ref(),
                    now: now_ms(),
                };
                l.filter(&group, names.as_deref(), prefix.as_deref(), &q)
                    .map_err(log_error)
            })
            .await?;
        // A full page may have more behind it; a short one is the end.
        let full = found.len() >= n
            || found
                .iter()
                .map(|f| f.event.message.len() + limits::EVENT_OVERHEAD)
                .sum::<usize>()
                + limits::MAX_EVENT_BYTES
                > MAX_RESPONSE_BYTES;
        let next_token = match (found.first(), found.last()) {
            (Some(first), _) if full && newest_first => Some(token('b', first.key)),
            (_, Some(last)) if full => Some(token('f', last.key)),
            _ => None,
        };
        let mut found = found;
        if newest_first {
            found.reverse();
        }
        Ok(FilterLogEventsResponse {
            events: Some(
                found
                    .into_iter()
                    .map(|f| FilteredLogEvent {
                        event_id: Some(format!("{:020}{:020}", f.key.stream, f.key.seq)),
                        ingestion_time: Some(f.event.ingestion),
                        log_stream_name: Some(f.stream_name),
                        message: Some(f.event.message),
                        timestamp: Some(f.event.timestamp),
                    })
                    .collect(),
            ),
            next_token,
            searched_log_streams: None,
        })
    }

    /// The agent protocol's log shipping: creates the group (when asked) and the stream if
    /// missing, stores the events after the stream's cursor, and answers the cursor now held.
    pub async fn agent_logs(
        &self,
        instance: &str,
        r: agent_proto::LogBatch,
    ) -> Result<agent_proto::LogBatchResponse, EcsError> {
        let instance = instance.to_string();
        if let Some(region) = r.region.as_deref().filter(|r| *r != self.config.region) {
            return Err(EcsError::invalid(format!(
                "awslogs-region '{region}' is not this log store's region ('{}')",
                self.config.region
            )));
        }
        let metrics = self.metrics.clone();
        let cloudwatch = self.cloudwatch.clone();
        self.with_logs(move |l| {
            let now = now_ms();
            if !l.has_group(&r.group) {
                if !r.create_group {
                    return Err(log_error(LogError::GroupNotFound));
                }
                match l.create_group(&r.group, now, BTreeMap::new()) {
                    Ok(()) | Err(LogError::GroupExists) => {}
                    Err(e) => return Err(log_error(e)),
                }
            }
            if r.stream.is_empty() {
                return Ok(agent_proto::LogBatchResponse { cursor: 0 });
            }
            create_stream(l, &r.group, &r.stream, now)?;
            if !r.events.is_empty() {
                let events: Vec<InputEvent> = r
                    .events
                    .iter()
                    .map(|e| InputEvent {
                        timestamp: e.timestamp,
                        message: e.message.clone(),
                    })
                    .collect();
                let cursors: Vec<i64> = r.events.iter().map(|e| e.cursor).collect();
                let stored = l
                    .put(&r.group, &r.stream, &events, Some(&cursors), now)
                    .map_err(log_error)?;
                apply_metric_filters(
                    l,
                    cloudwatch.as_deref(),
                    &r.group,
                    &events[stored.range.clone()],
                    now,
                );
                metrics.log_events.inc_by(stored.events as u64);
                metrics.log_bytes.inc_by(stored.bytes as u64);
                let rejected = stored.rejected;
                if rejected != Default::default() {
                    tracing::warn!(
                        instance,
                        group = r.group,
                        stream = r.stream,
                        ?rejected,
                        "shipped log events outside Logs' window were dropped"
                    );
                }
            }
            let held = l.stream_info(&r.group, &r.stream).map_err(log_error)?;
            Ok(agent_proto::LogBatchResponse {
                cursor: held.cursor,
            })
        })
        .await
    }
}

/// Runs the group's metric filters over the events a put stored and publishes what they emit
/// (not durably: a crash may lose the last minute of derived figures, never a log event).
fn apply_metric_filters(
    l: &LogStore,
    cloudwatch: Option<&berth_cloudwatch::MetricStore>,
    group: &str,
    events: &[InputEvent],
    now: i64,
) {
    let Some(cloudwatch) = cloudwatch else { return };
    if events.is_empty() {
        return;
    }
    let Ok(filters) = l.metric_filters(group) else {
        return;
    };
    // One statistic set per series, minute and unit: a batch of 10,000 events is a handful
    // of journal records, not one per event.
    let mut merged: BTreeMap<
        (berth_cloudwatch::SeriesKey, i64, berth_cloudwatch::Unit),
        berth_cloudwatch::Stats,
    > = BTreeMap::new();
    for e in filters.iter().flat_map(|f| f.apply(events)) {
        // CloudWatch's dimension values are 1 to 1,024 characters.
        if e.dimensions
            .iter()
            .any(|(_, v)| v.is_empty() || v.chars().count() > 1024)
        {
            continue;
        }
        let unit = e
            .unit
            .as_deref()
            .and_then(berth_cloudwatch::Unit::parse)
            .unwrap_or_default();
        let key = berth_cloudwatch::SeriesKey::new(e.namespace, e.metric_name, e.dimensions);
        let minute = e.timestamp - e.timestamp.rem_euclid(60_000);
        let one = berth_cloudwatch::Stats::from_value(e.value);
        merged
            .entry((key, minute, unit))
            .and_modify(|s| s.merge(one))
            .or_insert(one);
    }
    let data: Vec<berth_cloudwatch::Datum> = merged
        .into_iter()
        .map(|((key, minute, unit), stats)| berth_cloudwatch::Datum {
            key,
            timestamp_ms: minute,
            unit,
            stats,
            high_resolution: false,
        })
        .filter(|d| berth_cloudwatch::check(d, now).is_ok())
        .collect();
    if data.is_empty() {
        return;
    }
    if let Err(e) = cloudwatch.put(&data, now, false) {
        tracing::warn!(group, error = %e, "metric filter figures were not stored");
    }
}

fn create_stream(l: &LogStore, group: &str, stream: &str, now: i64) -> Result<(), EcsError> {
    match l.create_stream(group, stream, now) {
        Ok(()) | Err(LogError::StreamExists) => Ok(()),
        Err(e) => Err(log_error(e)),
    }
}

fn parse_pattern(text: &str) -> Result<Pattern, EcsError> {
    Pattern::parse(text).map_err(|e| EcsError::invalid(e.to_string()))
}

fn time_range(start: Option<i64>, end: Option<i64>) -> Result<(i64, i64), EcsError> {
    let (s, e) = (start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX));
    if s > e {
        return Err(EcsError::invalid(
            "startTime must be less than or equal to endTime.",
        ));
    }
    Ok((s, e))
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), EcsError> {
    for (k, v) in tags {
        if k.is_empty() || k.len() > 128 || k.starts_with("aws:") {
            return Err(EcsError::invalid(format!(
                "1 validation error detected: Value '{k}' at 'tags' failed to satisfy constraint: Map keys must satisfy constraint: [Member must have length between 1 and 128, Member must not begin with 'aws:']"
            )));
        }
        if v.len() > 256 {
            return Err(EcsError::invalid(format!(
                "1 validation error detected: Value at 'tags.{k}' failed to satisfy constraint: Member must have length less than or equal to 256"
            )));
        }
    }
    Ok(())
}
