//! The log store: groups of streams of events, on disk under one directory.
//!
//! ```text
//! ROOT/g<id>/group.json                 name, creation time, retention, tags
//! ROOT/g<id>/s<id>/stream.json          name, creation time
//! ROOT/g<id>/s<id>/<first seq>.seg      append-only events (see `segment`)
//! ROOT/g<id>/s<id>/<first seq>.sum      the summary of a sealed segment
//! ```
//! Names live inside the files, so any name Logs allows is fine on any file system. Only
//! summaries are held in memory (a few words per segment); events are read from the files,
//! which the kernel caches. Each stream appends under its own lock and fsyncs before it
//! answers, so an acknowledged batch survives a crash; retention drops whole segments.

use crate::metric_filter::{self, MetricFilter};
use crate::pattern::Pattern;
use crate::segment::{self, SegmentMeta, StoredEvent};
use crate::LogError;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A segment is sealed and a new one started beyond this size.
pub const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// The retention periods Logs accepts, in days.
pub const RETENTION_DAYS: &[i32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];
const DAY_MS: i64 = 86_400_000;

/// What a group is, as DescribeLogGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    pub created: i64,
    pub retention_days: Option<i32>,
    pub tags: BTreeMap<String, String>,
    pub stored_bytes: u64,
    pub metric_filter_count: usize,
}

/// What a stream is, as DescribeLogStreams shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    pub created: i64,
    pub first_event: Option<i64>,
    pub last_event: Option<i64>,
    pub last_ingestion: Option<i64>,
    pub stored_bytes: u64,
    /// The producer cursor of the last event (0 when none was given).
    pub cursor: i64,
}

/// One event to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputEvent {
    pub timestamp: i64,
    pub message: String,
}

/// Events of a batch that were not stored, as PutLogEvents reports them (indexes into the batch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejected {
    pub too_new_start: Option<usize>,
    pub too_old_end: Option<usize>,
    pub expired_end: Option<usize>,
}

/// What a PutLogEvents stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub rejected: Rejected,
    /// Events appended (not rejected, not already stored under the producer's cursor).
    pub events: usize,
    /// Their message bytes.
    pub bytes: usize,
    /// Which of the input events they are.
    pub range: std::ops::Range<usize>,
}

/// Where a read starts, in the order of (timestamp, sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The oldest events.
    Head,
    /// The newest events.
    Tail,
    /// Events after this position.
    After(Key),
    /// Events before this position.
    Before(Key),
}

/// An event's position: timestamp, then stream, then sequence within the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub timestamp: i64,
    pub stream: u64,
    pub seq: u64,
}

/// One event found by a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub key: Key,
    pub stream_name: String,
    pub event: StoredEvent,
}

/// A read of one stream or of a group.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// Inclusive start and exclusive end, in ms.
    pub start: i64,
    pub end: i64,
    pub bound: Bound,
    pub limit: usize,
    /// Stop adding events once their messages (plus 26 bytes each) exceed this.
    pub max_bytes: usize,
    pub pattern: Option<&'a Pattern>,
    /// Now, in ms: events older than the group's retention are gone.
    pub now: i64,
}

/// The rules of PutLogEvents, from Logs' documentation.
pub mod limits {
    /// Events in one batch.
    pub const MAX_EVENTS: usize = 10_000;
    /// A batch's size: messages plus 26 bytes each.
    pub const MAX_BATCH_BYTES: usize = 1_048_576;
    /// Bytes counted per event on top of its message.
    pub const EVENT_OVERHEAD: usize = 26;
    /// One event's size, overhead included.
    pub const MAX_EVENT_BYTES: usize = 262_144;
    /// A batch may span at most a day.
    pub const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;
    /// Events more than two hours ahead are too new.
    pub const MAX_AHEAD_MS: i64 = 2 * 3600 * 1000;
    /// Events older than fourteen days are too old.
    pub const MAX_AGE_MS: i64 = 14 * 86_400_000;
    /// Groups per DescribeLogGroups page and streams per DescribeLogStreams page.
    pub const MAX_DESCRIBE: usize = 50;
}

#[derive(Debug)]
struct Group {
    id: u64,
    dir: PathBuf,
    meta: Mutex<GroupMeta>,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
}

#[derive(Debug, Clone)]
struct GroupMeta {
    name: String,
    created: i64,
    retention_days: Option<i32>,
    tags: BTreeMap<String, String>,
    metric_filters: BTreeMap<String, Arc<MetricFilter>>,
}

#[derive(Debug)]
struct Stream {
    id: u64,
    name: String,
    created: i64,
    dir: PathBuf,
    state: Mutex<StreamState>,
}

#[derive(Debug)]
struct StreamState {
    /// Oldest first; the last one is the one appended to.
    segments: Vec<SegmentMeta>,
    active: Option<File>,
    next_seq: u64,
}

/// The store. Cheap to share behind an `Arc`; every method is blocking IO (call it from a
/// blocking thread).
#[derive(Debug)]
pub struct LogStore {
    root: PathBuf,
    segment_bytes: u64,
    groups: RwLock<BTreeMap<String, Arc<Group>>>,
    next_id: AtomicU64,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LogError {
    let context = context.into();
    move |source| LogError::Io { context, source }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes `text` to `path` atomically and durably.
fn write_file(path: &Path, text: &str) -> Result<(), LogError> {
    write_bytes(path, text.as_bytes())
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = path.with_extension("tmp");
    let what = || path.display().to_string();
    let mut f = File::create(&tmp).map_err(io(what()))?;
    f.write_all(bytes).map_err(io(what()))?;
    f.sync_all().map_err(io(what()))?;
    fs::rename(&tmp, path).map_err(io(what()))?;
    sync_dir(path.parent().unwrap_or(path))
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir.display().to_string()))
}

/// Checks a group name as Logs does.
pub fn check_group_name(name: &str) -> Result<(), LogError> {
    let ok = (1..=512).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/#".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(LogError::Invalid(format!(
            "1 validation error detected: Value '{name}' at 'logGroupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+"
        )))
    }
}

/// Checks a stream name as Logs does.
pub fn check_stream_name(name: &str) -> Result<(), LogError> {
    let ok = (1..=512).contains(&name.len()) && !name.contains([':', '*']);
    if ok {
        Ok(())
    } else {
        Err(LogError::Invalid(format!(
            "1 validation error detected: Value '{name}' at 'logStreamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [^:*]*"
        )))
    }
}

/// Checks a batch against PutLogEvents' rules; `Ok` tells which events are stored (a range of
/// the batch) and which are reported as rejected. Nothing is stored when this fails.
pub fn check_batch(
    events: &[InputEvent],
    now: i64,
    retention_days: Option<i32>,
) -> Result<(std::ops::Range<usize>, Rejected), LogError> {
    use limits::*;
    if events.is_empty() {
        return Err(LogError::Invalid(
            "1 validation error detected: Value '[]' at 'logEvents' failed to satisfy constraint: Member must have length greater than or equal to 1".into(),
        ));
    }
    if events.len() > MAX_EVENTS {
        return Err(LogError::Invalid(format!(
            "1 validation error detected: Value at 'logEvents' failed to satisfy constraint: Member must have length less than or equal to {MAX_EVENTS} (got {})",
            events.len()
        )));
    }
    let size: usize = events
        .iter()
        .map(|e| e.message.len() + EVENT_OVERHEAD)
        .sum();
    if size > MAX_BATCH_BYTES {
        return Err(LogError::Invalid(format!(
            "Upload too large: {size} bytes exceeds limit of {MAX_BATCH_BYTES}"
        )));
    }
    for (i, e) in events.iter().enumerate() {
        if e.message.is_empty() {
            return Err(LogError::Invalid(format!(
                "1 validation error detected: Value '' at 'logEvents.{}.member.message' failed to satisfy constraint: Member must have length greater than or equal to 1",
                i + 1
            )));
        }
        if e.message.len() + EVENT_OVERHEAD > MAX_EVENT_BYTES {
            return Err(LogError::Invalid(format!(
                "Log event too large: {} bytes exceeds limit of {MAX_EVENT_BYTES}",
                e.message.len() + EVENT_OVERHEAD
            )));
        }
    }
    if events.windows(2).any(|w| w[1].timestamp < w[0].timestamp) {
        return Err(LogError::Invalid(
            "Log events in a single PutLogEvents request must be in chronological order.".into(),
        ));
    }
    let (first, last) = (events[0].timestamp, events[events.len() - 1].timestamp);
    if last - first > MAX_SPAN_MS {
        return Err(LogError::Invalid(
            "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.".into(),
        ));
    }
    let mut rejected = Rejected::default();
    let too_old = now - MAX_AGE_MS;
    let expired = retention_days.map(|d| now - i64::from(d) * DAY_MS);
    // Events are in order, so each rejected kind is a prefix or a suffix.
    let mut lo = 0;
    if let Some(cut) = expired {
        let n = events.iter().take_while(|e| e.timestamp < cut).count();
        if n > 0 {
            rejected.expired_end = Some(n - 1);
            lo = n;
        }
    }
    let n = events.iter().take_while(|e| e.timestamp < too_old).count();
    if n > 0 {
        rejected.too_old_end = Some(n - 1);
        lo = lo.max(n);
    }
    let hi = events
        .iter()
        .position(|e| e.timestamp > now + MAX_AHEAD_MS)
        .unwrap_or(events.len());
    if hi < events.len() {
        rejected.too_new_start = Some(hi);
    }
    Ok((lo..hi.max(lo), rejected))
}

/// One segment to read, with the stream it belongs to.
#[derive(Debug, Clone)]
struct Source {
    stream: u64,
    stream_name: Arc<str>,
    segment: SegmentMeta,
}

/// An event held while choosing the `limit` first (or last); ordered by key alone.
#[derive(Debug)]
struct Held(Found);
impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        self.0.key == o.0.key
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.key.cmp(&o.0.key)
    }
}

impl LogStore {
    /// Opens (or creates) the store under `root`, cutting off any torn tail a crash left.
    pub fn open(root: impl Into<PathBuf>) -> Result<LogStore, LogError> {
        LogStore::open_with(root, SEGMENT_BYTES)
    }

    /// [`LogStore::open`] with another segment size (tests use small ones).
    pub fn open_with(root: impl Into<PathBuf>, segment_bytes: u64) -> Result<LogStore, LogError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io(root.display().to_string()))?;
        let mut groups = BTreeMap::new();
        let mut max_id = 0;
        for entry in fs::read_dir(&root).map_err(io(root.display().to_string()))? {
            let entry = entry.map_err(io(root.display().to_string()))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if name.starts_with("trash-") || name.ends_with(".tmp") {
                // A deletion or creation a crash interrupted.
                let _ = fs::remove_dir_all(&path);
                continue;
            }
            let Some(id) = name.strip_prefix('g').and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            max_id = max_id.max(id);
            let group = load_group(id, &path, &mut max_id)?;
            let name = lock(&group.meta).name.clone();
            groups.insert(name, Arc::new(group));
        }
        Ok(LogStore {
            root,
            segment_bytes,
            groups: RwLock::new(groups),
            next_id: AtomicU64::new(max_id + 1),
        })
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn group(&self, name: &str) -> Result<Arc<Group>, LogError> {
        read(&self.groups)
            .get(name)
            .cloned()
            .ok_or(LogError::GroupNotFound)
    }

    fn stream(&self, group: &str, stream: &str) -> Result<(Arc<Group>, Arc<Stream>), LogError> {
        let g = self.group(group)?;
        let s = read(&g.streams)
            .get(stream)
            .cloned()
            .ok_or(LogError::StreamNotFound)?;
        Ok((g, s))
    }

    /// CreateLogGroup.
    pub fn create_group(
        &self,
        name: &str,
        now: i64,
        tags: BTreeMap<String, String>,
    ) -> Result<(), LogError> {
        check_group_name(name)?;
        let mut groups = write(&self.groups);
        if groups.contains_key(name) {
            return Err(LogError::GroupExists);
        }
        let id = self.id();
        let meta = GroupMeta {
            name: name.to_string(),
            created: now,
            retention_days: None,
            tags,
            metric_filters: BTreeMap::new(),
        };
        let tmp = self.root.join(format!("g{id}.tmp"));
        fs::create_dir_all(&tmp).map_err(io(tmp.display().to_string()))?;
        write_file(&tmp.join("group.json"), &group_json(&meta))?;
        let dir = self.root.join(format!("g{id}"));
        fs::rename(&tmp, &dir).map_err(io(dir.display().to_string()))?;
        sync_dir(&self.root)?;
        groups.insert(
            name.to_string(),
            Arc::new(Group {
                id,
                dir,
                meta: Mutex::new(meta),
                streams: RwLock::new(BTreeMap::new()),
            }),
        );
        Ok(())
    }

    /// DeleteLogGroup: the group, its streams and their events.
    pub fn delete_group(&self, name: &str) -> Result<(), LogError> {
        let g = write(&self.groups)
            .remove(name)
            .ok_or(LogError::GroupNotFound)?;
        let trash = self.root.join(format!("trash-g{}", g.id));
        fs::rename(&g.dir, &trash).map_err(io(g.dir.display().to_string()))?;
        sync_dir(&self.root)?;
        fs::remove_dir_all(&trash).map_err(io(trash.display().to_string()))
    }

    /// Every group, in name order, from after `after`; with a prefix or a (case-insensitive)
    /// substring.
    pub fn groups(
        &self,
        prefix: Option<&str>,
        contains: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<GroupInfo> {
        let groups = read(&self.groups);
        let contains = contains.map(str::to_lowercase);
        groups
            .iter()
            .filter(|(n, _)| after.is_none_or(|a| n.as_str() > a))
            .filter(|(n, _)| prefix.is_none_or(|p| n.starts_with(p)))
            .filter(|(n, _)| {
                contains
                    .as_deref()
                    .is_none_or(|c| n.to_lowercase().contains(c))
            })
            .take(limit)
            .map(|(_, g)| group_info(g))
            .collect()
    }

    /// Whether a group exists.
    pub fn has_group(&self, name: &str) -> bool {
        read(&self.groups).contains_key(name)
    }

    /// One group.
    pub fn group_info(&self, name: &str) -> Result<GroupInfo, LogError> {
        Ok(group_info(&*self.group(name)?))
    }

    /// PutRetentionPolicy / DeleteRetentionPolicy.
    pub fn set_retention(&self, name: &str, days: Option<i32>) -> Result<(), LogError> {
        if let Some(d) = days {
            if !RETENTION_DAYS.contains(&d) {
                return Err(LogError::Invalid(format!(
                    "1 validation error detected: Value '{d}' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                    RETENTION_DAYS.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        self.update_group(name, |m| {
            m.retention_days = days;
            Ok(())
        })
    }

    /// PutMetricFilter: adds the filter, or replaces the group's filter of that name.
    pub fn put_metric_filter(&self, group: &str, filter: MetricFilter) -> Result<(), LogError> {
        self.update_group(group, |m| {
            if !m.metric_filters.contains_key(&filter.name)
                && m.metric_filters.len() >= metric_filter::MAX_FILTERS_PER_GROUP
            {
                return Err(LogError::Limit("Resource limit exceeded.".into()));
            }
            m.metric_filters
                .insert(filter.name.clone(), Arc::new(filter));
            Ok(())
        })
    }

    /// DeleteMetricFilter.
    pub fn delete_metric_filter(&self, group: &str, name: &str) -> Result<(), LogError> {
        self.update_group(group, |m| match m.metric_filters.remove(name) {
            Some(_) => Ok(()),
            None => Err(LogError::FilterNotFound),
        })
    }

    /// A group's metric filters, by name.
    pub fn metric_filters(&self, group: &str) -> Result<Vec<Arc<MetricFilter>>, LogError> {
        let g = self.group(group)?;
        let filters = lock(&g.meta).metric_filters.values().cloned().collect();
        Ok(filters)
    }

    /// Every group's metric filters, by group and filter name.
    pub fn all_metric_filters(&self) -> Vec<(String, Arc<MetricFilter>)> {
        let groups: Vec<Arc<Group>> = read(&self.groups).values().cloned().collect();
        let mut out: Vec<(String, Arc<MetricFilter>)> = groups
            .iter()
            .flat_map(|g| {
                let m = lock(&g.meta);
                m.metric_filters
                    .values()
                    .map(|f| (m.name.clone(), f.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1.name).cmp(&(&b.0, &b.1.name)));
        out
    }

    /// Adds and removes tags of a group; more than `max` tags after the change is
    /// [`LogError::TooManyTags`], and nothing changes.
    pub fn retag(
        &self,
        name: &str,
        add: &BTreeMap<String, String>,
        remove: &[String],
        max: usize,
    ) -> Result<(), LogError> {
        self.update_group(name, |m| {
            for k in remove {
                m.tags.remove(k);
            }
            m.tags
                .extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
            if m.tags.len() > max {
                return Err(LogError::TooManyTags(format!(
                    "A resource can have no more than {max} tags."
                )));
            }
            Ok(())
        })
    }

    /// Changes a group's metadata under its lock (so a limit checked by `change` holds against
    /// concurrent changes) and writes it before the change is seen.
    fn update_group(
        &self,
        name: &str,
        change: impl FnOnce(&mut GroupMeta) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let g = self.group(name)?;
        let mut meta = lock(&g.meta);
        let mut next = meta.clone();
        change(&mut next)?;
        write_file(&g.dir.join("group.json"), &group_json(&next))?;
        *meta = next;
        Ok(())
    }

    /// CreateLogStream.
    pub fn create_stream(&self, group: &str, name: &str, now: i64) -> Result<(), LogError> {
        check_stream_name(name)?;
        let g = self.group(group)?;
        let mut streams = write(&g.streams);
        if streams.contains_key(name) {
            return Err(LogError::StreamExists);
        }
        let id = self.id();
        let tmp = g.dir.join(format!("s{id}.tmp"));
        fs::create_dir_all(&tmp).map_err(io(tmp.display().to_string()))?;
        write_file(&tmp.join("stream.json"), &stream_json(name, now))?;
        let dir = g.dir.join(format!("s{id}"));
        fs::rename(&tmp, &dir).map_err(io(dir.display().to_string()))?;
        sync_dir(&g.dir)?;
        streams.insert(
            name.to_string(),
            Arc::new(Stream {
                id,
                name: name.to_string(),
                created: now,
                dir,
                state: Mutex::new(StreamState {
                    segments: Vec::new(),
                    active: None,
                    next_seq: 0,
                }),
            }),
        );
        Ok(())
    }

    /// DeleteLogStream.
    pub fn delete_stream(&self, group: &str, name: &str) -> Result<(), LogError> {
        let g = self.group(group)?;
        let s = write(&g.streams)
            .remove(name)
            .ok_or(LogError::StreamNotFound)?;
        let _writer = lock(&s.state);
        let trash = g.dir.join(format!("trash-s{}", s.id));
        fs::rename(&s.dir, &trash).map_err(io(s.dir.display().to_string()))?;
        sync_dir(&g.dir)?;
        fs::remove_dir_all(&trash).map_err(io(trash.display().to_string()))
    }

    /// The streams of a group in name order (after `after`, with a prefix), or by last event
    /// time.
    pub fn streams(
        &self,
        group: &str,
        prefix: Option<&str>,
        by_last_event: bool,
        descending: bool,
    ) -> Result<Vec<StreamInfo>, LogError> {
        let g = self.group(group)?;
        let streams: Vec<Arc<Stream>> = read(&g.streams)
            .iter()
            .filter(|(n, _)| prefix.is_none_or(|p| n.starts_with(p)))
            .map(|(_, s)| s.clone())
            .collect();
        let mut infos: Vec<StreamInfo> = streams.iter().map(|s| stream_info(s)).collect();
        if by_last_event {
            infos.sort_by(|a, b| {
                (a.last_event.unwrap_or(a.created), &a.name)
                    .cmp(&(b.last_event.unwrap_or(b.created), &b.name))
            });
        }
        if descending {
            infos.reverse();
        }
        Ok(infos)
    }

    /// One stream.
    pub fn stream_info(&self, group: &str, stream: &str) -> Result<StreamInfo, LogError> {
        Ok(stream_info(&self.stream(group, stream)?.1))
    }

    /// PutLogEvents: checks the batch, then appends what is accepted durably. With producer
    /// `cursors` (one per event, increasing), events at or before the stream's cursor were
    /// already stored by an earlier attempt and are skipped, so a resent batch is stored once.
    pub fn put(
        &self,
        group: &str,
        stream: &str,
        events: &[InputEvent],
        cursors: Option<&[i64]>,
        now: i64,
    ) -> Result<Stored, LogError> {
        let (g, s) = self.stream(group, stream)?;
        let retention = lock(&g.meta).retention_days;
        let (range, rejected) = check_batch(events, now, retention)?;
        let mut st = lock(&s.state);
        let mut range = range;
        if let Some(cursors) = cursors {
            let held = st.segments.last().map_or(0, |m| m.last_cursor);
            while range.start < range.end && cursors[range.start] <= held {
                range.start += 1;
            }
        }
        if range.is_empty() {
            return Ok(Stored {
                rejected,
                ..Default::default()
            });
        }
        let mut buf = Vec::with_capacity(
            events[range.clone()]
                .iter()
                .map(|e| segment::HEADER + e.message.len())
                .sum(),
        );
        for i in range.clone() {
            let cursor = cursors.map_or(0, |c| c[i]);
            segment::encode(
                &mut buf,
                events[i].timestamp,
                now,
                cursor,
                &events[i].message,
            );
        }
        s.append(&mut st, &buf, self.segment_bytes)?;
        let active = st.segments.last_mut().ok_or_else(|| LogError::Io {
            context: "the stream has no segment after an append".into(),
            source: std::io::Error::other("no active segment"),
        })?;
        for i in range.clone() {
            let cursor = cursors.map_or(0, |c| c[i]);
            active.note(events[i].timestamp, now, cursor, events[i].message.len());
        }
        st.next_seq += range.len() as u64;
        Ok(Stored {
            rejected,
            events: range.len(),
            bytes: events[range.clone()].iter().map(|e| e.message.len()).sum(),
            range,
        })
    }

    /// Reads one stream (GetLogEvents): events in `[start, end)` from `bound`, in order.
    pub fn get(&self, group: &str, stream: &str, q: &Query<'_>) -> Result<Vec<Found>, LogError> {
        let (g, s) = self.stream(group, stream)?;
        let cutoff = retention_cutoff(&g, q.now);
        select(sources(&[s]), q, cutoff)
    }

    /// Reads a group (FilterLogEvents): the events of the named streams (all when `None`) or
    /// those with a prefix, matching the pattern, in `(timestamp, stream, seq)` order.
    pub fn filter(
        &self,
        group: &str,
        names: Option<&[String]>,
        prefix: Option<&str>,
        q: &Query<'_>,
    ) -> Result<Vec<Found>, LogError> {
        let g = self.group(group)?;
        let streams: Vec<Arc<Stream>> = {
            let all = read(&g.streams);
            match names {
                Some(names) => names.iter().filter_map(|n| all.get(n).cloned()).collect(),
                None => all
                    .iter()
                    .filter(|(n, _)| prefix.is_none_or(|p| n.starts_with(p)))
                    .map(|(_, s)| s.clone())
                    .collect(),
            }
        };
        let cutoff = retention_cutoff(&g, q.now);
        select(sources(&streams), q, cutoff)
    }

    /// Drops every segment whose events are all past their group's retention. Returns how
    /// many were dropped.
    pub fn expire(&self, now: i64) -> Result<usize, LogError> {
        let groups: Vec<Arc<Group>> = read(&self.groups).values().cloned().collect();
        let mut dropped = 0;
        for g in groups {
            let cutoff = retention_cutoff(&g, now);
            if cutoff == i64::MIN {
                continue;
            }
            let streams: Vec<Arc<Stream>> = read(&g.streams).values().cloned().collect();
            for s in streams {
                let mut st = lock(&s.state);
                let n = st
                    .segments
                    .iter()
                    .take_while(|m| m.count == 0 || m.max_ts < cutoff)
                    .count();
                if n == 0 {
                    continue;
                }
                if n == st.segments.len() {
                    st.active = None;
                }
                for m in st.segments.drain(..n) {
                    let _ = fs::remove_file(m.path.with_extension("sum"));
                    let _ = fs::remove_file(m.path.with_extension("grams"));
                    fs::remove_file(&m.path).map_err(io(m.path.display().to_string()))?;
                    dropped += 1;
                }
            }
        }
        Ok(dropped)
    }

    /// Removes every group (a reset).
    pub fn clear(&self) -> Result<(), LogError> {
        let names: Vec<String> = read(&self.groups).keys().cloned().collect();
        for n in names {
            match self.delete_group(&n) {
                Ok(()) | Err(LogError::GroupNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Stream {
    /// Appends encoded records to the active segment (starting a new one when it is full) and
    /// makes them durable; on failure nothing of them remains.
    fn append(&self, st: &mut StreamState, buf: &[u8], segment_bytes: u64) -> Result<(), LogError> {
        let full = st
            .segments
            .last()
            .is_some_and(|m| m.bytes > 0 && m.bytes + buf.len() as u64 > segment_bytes);
        if full {
            // Seal the full segment: durable, with its trigram filter and summary beside it.
            if let Some(last) = st.segments.last() {
                if let Some(f) = st.active.take() {
                    f.sync_all().map_err(io(last.path.display().to_string()))?;
                }
                let sealed = segment::read_prefix(&last.path, last.bytes)
                    .map_err(io(last.path.display().to_string()))?;
                write_bytes(
                    &last.path.with_extension("grams"),
                    &segment::grams_of(&sealed),
                )?;
                write_file(&last.path.with_extension("sum"), &summary_json(last))?;
            }
        }
        if full || st.segments.is_empty() {
            let path = self.dir.join(format!("{:020}.seg", st.next_seq));
            st.segments.push(SegmentMeta::empty(path, st.next_seq));
        }
        if st.active.is_none() {
            let path = st
                .segments
                .last()
                .map(|m| m.path.clone())
                .unwrap_or_default();
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(path.display().to_string()))?;
            sync_dir(&self.dir)?;
            st.active = Some(f);
        }
        let path = st
            .segments
            .last()
            .map(|m| m.path.display().to_string())
            .unwrap_or_default();
        let valid = st.segments.last().map_or(0, |m| m.bytes);
        let Some(f) = st.active.as_mut() else {
            return Err(LogError::Io {
                context: path,
                source: std::io::Error::other("no open segment"),
            });
        };
        let written = f.write_all(buf).and_then(|()| f.sync_data());
        if let Err(e) = written {
            // Cut the partial write off so the segment holds only acknowledged records.
            let _ = f.set_len(valid);
            st.active = None;
            return Err(LogError::Io {
                context: path,
                source: e,
            });
        }
        Ok(())
    }
}

fn retention_cutoff(g: &Group, now: i64) -> i64 {
    match lock(&g.meta).retention_days {
        Some(d) => now - i64::from(d) * DAY_MS,
        None => i64::MIN,
    }
}

fn sources(streams: &[Arc<Stream>]) -> Vec<Source> {
    let mut out = Vec::new();
    for s in streams {
        let name: Arc<str> = Arc::from(s.name.as_str());
        for m in &lock(&s.state).segments {
            if m.count > 0 {
                out.push(Source {
                    stream: s.id,
                    stream_name: name.clone(),
                    segment: m.clone(),
                });
            }
        }
    }
    out
}

/// Chooses the first (or last) `q.limit` events of `sources` in key order, reading as few
/// segments as it can: segments are visited from the side the read starts on, and the visit
/// stops when no event of the next segment could displace what is held.
fn select(mut sources: Vec<Source>, q: &Query<'_>, cutoff: i64) -> Result<Vec<Found>, LogError> {
    let start = q.start.max(cutoff);
    let (lo, hi) = match q.bound {
        Bound::After(k) => (Some(k), None),
        Bound::Before(k) => (None, Some(k)),
        Bound::Head | Bound::Tail => (None, None),
    };
    let newest_first = matches!(q.bound, Bound::Tail | Bound::Before(_));
    sources.retain(|s| s.segment.overlaps(start, q.end));
    if let Some(lo) = lo {
        sources.retain(|s| s.segment.max_ts >= lo.timestamp);
    }
    if let Some(hi) = hi {
        sources.retain(|s| s.segment.min_ts <= hi.timestamp);
    }
    if newest_first {
        sources.sort_by_key(|s| std::cmp::Reverse(s.segment.max_ts));
    } else {
        sources.sort_by_key(|s| s.segment.min_ts);
    }
    let literals: Vec<memchr::memmem::Finder<'static>> = q
        .pattern
        .map(|p| {
            p.required_literals()
                .iter()
                .map(|l| memchr::memmem::Finder::new(l.as_bytes()).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let limit = q.limit.max(1);
    // Keeps the `limit` best: a max-heap of keys when reading oldest first (the worst is the
    // largest), a min-heap when newest first.
    let mut oldest: BinaryHeap<Held> = BinaryHeap::new();
    let mut newest: BinaryHeap<std::cmp::Reverse<Held>> = BinaryHeap::new();
    // A search with required literals reads and screens a window of segments on every core
    // at once (the window bounds memory and keeps the early stop); other reads go one
    // segment at a time, since they usually need only the first.
    let window = if literals.is_empty() {
        1
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8)
    };
    'visit: for chunk in sources.chunks(window) {
        let screened = screen(chunk, &literals)?;
        for (src, buf) in chunk.iter().zip(screened) {
            let seg = &src.segment;
            if newest_first {
                if let Some(w) = newest.peek().filter(|_| newest.len() >= limit) {
                    if seg.max_ts < w.0 .0.key.timestamp {
                        break 'visit;
                    }
                }
            } else if let Some(w) = oldest.peek().filter(|_| oldest.len() >= limit) {
                if seg.min_ts > w.0.key.timestamp {
                    break 'visit;
                }
            }
            let Some(buf) = buf else {
                continue;
            };
            let mut at = 0;
            let mut seq = seg.first_seq;
            while let Some(r) = segment::decode(&buf, at) {
                at = r.end;
                let key = Key {
                    timestamp: r.timestamp,
                    stream: src.stream,
                    seq,
                };
                seq += 1;
                if r.timestamp < start
                    || r.timestamp >= q.end
                    || lo.is_some_and(|lo| key <= lo)
                    || hi.is_some_and(|hi| key >= hi)
                {
                    continue;
                }
                // Cheap rejections before the pattern and before any allocation.
                if newest_first {
                    if newest.len() >= limit && newest.peek().is_some_and(|w| key <= w.0 .0.key) {
                        continue;
                    }
                } else if oldest.len() >= limit && oldest.peek().is_some_and(|w| key >= w.0.key) {
                    continue;
                }
                if q.pattern.is_some_and(|p| !p.matches(r.message)) {
                    continue;
                }
                let found = Held(Found {
                    key,
                    stream_name: src.stream_name.to_string(),
                    event: StoredEvent {
                        seq: key.seq,
                        timestamp: r.timestamp,
                        ingestion: r.ingestion,
                        message: r.message.to_string(),
                    },
                });
                if newest_first {
                    newest.push(std::cmp::Reverse(found));
                    if newest.len() > limit {
                        newest.pop();
                    }
                } else {
                    oldest.push(found);
                    if oldest.len() > limit {
                        oldest.pop();
                    }
                }
            }
        }
    }
    let mut out: Vec<Found> = if newest_first {
        newest.into_iter().map(|r| r.0 .0).collect()
    } else {
        oldest.into_iter().map(|h| h.0).collect()
    };
    out.sort_by_key(|f| f.key);
    // The response-size cap, kept from the side the read started on.
    let mut bytes = 0;
    let fits = |f: &Found, bytes: &mut usize| {
        *bytes += f.event.message.len() + limits::EVENT_OVERHEAD;
        *bytes <= q.max_bytes
    };
    if newest_first {
        let keep = out.iter().rev().take_while(|f| fits(f, &mut bytes)).count();
        out.drain(..out.len() - keep);
    } else {
        let keep = out.iter().take_while(|f| fits(f, &mut bytes)).count();
        out.truncate(keep);
    }
    Ok(out)
}

/// Reads the segments of `chunk` side by side, each on a thread of its own, and keeps those
/// holding every literal (all of them when there are none).
fn screen(
    chunk: &[Source],
    literals: &[memchr::memmem::Finder<'static>],
) -> Result<Vec<Option<Vec<u8>>>, LogError> {
    let read = |src: &Source| -> Result<Option<Vec<u8>>, LogError> {
        let seg = &src.segment;
        // A sealed segment's trigram filter (64 KiB) spares reading it (8 MiB) when a literal
        // cannot be in it. The filter exists only once the segment is sealed and durable.
        if !literals.is_empty() {
            if let Ok(bits) = fs::read(seg.path.with_extension("grams")) {
                if !literals
                    .iter()
                    .all(|f| segment::may_contain(&bits, f.needle()))
                {
                    return Ok(None);
                }
            }
        }
        let buf = segment::read_prefix(&seg.path, seg.bytes)
            .map_err(io(seg.path.display().to_string()))?;
        Ok(literals
            .iter()
            .all(|f| f.find(&buf).is_some())
            .then_some(buf))
    };
    if chunk.len() == 1 {
        return Ok(vec![read(&chunk[0])?]);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunk
            .iter()
            .map(|src| scope.spawn(move || read(src)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(LogError::Io {
                        context: "a segment reader".into(),
                        source: std::io::Error::other("the reader thread panicked"),
                    })
                })
            })
            .collect()
    })
}

fn group_info(g: &Group) -> GroupInfo {
    let meta = lock(&g.meta).clone();
    let stored_bytes = read(&g.streams)
        .values()
        .map(|s| stream_info(s).stored_bytes)
        .sum();
    GroupInfo {
        name: meta.name,
        created: meta.created,
        retention_days: meta.retention_days,
        tags: meta.tags,
        stored_bytes,
        metric_filter_count: meta.metric_filters.len(),
    }
}

fn stream_info(s: &Stream) -> StreamInfo {
    let st = lock(&s.state);
    let live = st.segments.iter().filter(|m| m.count > 0);
    let first_event = live.clone().map(|m| m.min_ts).min();
    let last_event = live.clone().map(|m| m.max_ts).max();
    let last = st.segments.iter().rev().find(|m| m.count > 0);
    StreamInfo {
        name: s.name.clone(),
        created: s.created,
        first_event,
        last_event,
        last_ingestion: last.map(|m| m.last_ingestion),
        stored_bytes: live.map(|m| m.message_bytes).sum(),
        cursor: last.map_or(0, |m| m.last_cursor),
    }
}

fn group_json(m: &GroupMeta) -> String {
    serde_json::json!({
        "name": m.name,
        "created": m.created,
        "retentionInDays": m.retention_days,
        "tags": m.tags,
        "metricFilters": m.metric_filters.values().map(|f| f.to_json()).collect::<Vec<_>>(),
    })
    .to_string()
}

fn stream_json(name: &str, created: i64) -> String {
    serde_json::json!({"name": name, "created": created}).to_string()
}

fn summary_json(m: &SegmentMeta) -> String {
    serde_json::json!({
        "count": m.count, "bytes": m.bytes, "minTs": m.min_ts, "maxTs": m.max_ts,
        "messageBytes": m.message_bytes,
        "lastIngestion": m.last_ingestion, "lastCursor": m.last_cursor,
    })
    .to_string()
}

fn read_json(path: &Path) -> Result<serde_json::Value, LogError> {
    let text = fs::read_to_string(path).map_err(io(path.display().to_string()))?;
    serde_json::from_str(&text).map_err(|e| LogError::Io {
        context: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

fn load_group(id: u64, dir: &Path, max_id: &mut u64) -> Result<Group, LogError> {
    let v = read_json(&dir.join("group.json"))?;
    let meta = GroupMeta {
        name: v["name"].as_str().unwrap_or_default().to_string(),
        created: v["created"].as_i64().unwrap_or_default(),
        retention_days: v["retentionInDays"].as_i64().map(|d| d as i32),
        tags: v["tags"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        metric_filters: v["metricFilters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| match MetricFilter::from_json(f) {
                Ok(f) => Some((f.name.clone(), Arc::new(f))),
                Err(e) => {
                    tracing::warn!(group = %dir.display(), error = %e, "dropping an unreadable metric filter");
                    None
                }
            })
            .collect(),
    };
    let mut streams = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io(dir.display().to_string()))? {
        let entry = entry.map_err(io(dir.display().to_string()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("trash-") || name.ends_with(".tmp") {
            let _ = fs::remove_dir_all(entry.path());
            continue;
        }
        let Some(sid) = name.strip_prefix('s').and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        *max_id = (*max_id).max(sid);
        let s = load_stream(sid, &entry.path())?;
        streams.insert(s.name.clone(), Arc::new(s));
    }
    Ok(Group {
        id,
        dir: dir.to_path_buf(),
        meta: Mutex::new(meta),
        streams: RwLock::new(streams),
    })
}

fn load_stream(id: u64, dir: &Path) -> Result<Stream, LogError> {
    let v = read_json(&dir.join("stream.json"))?;
    let mut firsts: Vec<u64> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir.display().to_string()))? {
        let entry = entry.map_err(io(dir.display().to_string()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(n) = name.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
            firsts.push(n);
        }
    }
    firsts.sort_unstable();
    let mut segments = Vec::new();
    for (i, first) in firsts.iter().enumerate() {
        let path = dir.join(format!("{first:020}.seg"));
        let sealed = i + 1 < firsts.len();
        let summary = if sealed {
            read_json(&path.with_extension("sum"))
                .ok()
                .and_then(|v| summary_from(&v, path.clone(), *first))
        } else {
            None
        };
        let meta = match summary {
            Some(m) => m,
            None => {
                let m = segment::scan(&path, *first).map_err(io(path.display().to_string()))?;
                // Cut off what a crash left half-written (never acknowledged).
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(path.display().to_string()))?;
                if f.metadata().map(|md| md.len()).unwrap_or(0) > m.bytes {
                    f.set_len(m.bytes).map_err(io(path.display().to_string()))?;
                    f.sync_all().map_err(io(path.display().to_string()))?;
                }
                m
            }
        };
        segments.push(meta);
    }
    let next_seq = segments.last().map_or(0, |m| m.first_seq + m.count);
    Ok(Stream {
        id,
        name: v["name"].as_str().unwrap_or_default().to_string(),
        created: v["created"].as_i64().unwrap_or_default(),
        dir: dir.to_path_buf(),
        state: Mutex::new(StreamState {
            segments,
            active: None,
            next_seq,
        }),
    })
}

fn summary_from(v: &serde_json::Value, path: PathBuf, first_seq: u64) -> Option<SegmentMeta> {
    Some(SegmentMeta {
        path,
        first_seq,
        count: v["count"].as_u64()?,
        bytes: v["bytes"].as_u64()?,
        min_ts: v["minTs"].as_i64()?,
        max_ts: v["maxTs"].as_i64()?,
        message_bytes: v["messageBytes"].as_u64()?,
        last_ingestion: v["lastIngestion"].as_i64()?,
        last_cursor: v["lastCursor"].as_i64()?,
    })
}
