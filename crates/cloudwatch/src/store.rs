//! The metric store: per series, statistic sets in buckets keyed by (bucket start, unit), held
//! in memory, with every merge journaled on disk.
//!
//! ```text
//! DIR/metrics.journal        bucket merges, in order (see `journal`)
//! DIR/metrics.journal.tmp    a compaction a crash interrupted (removed at open)
//! ```
//!
//! Every datum lands in a one-minute bucket; a high-resolution datum (StorageResolution 1)
//! lands in a one-second bucket as well. Queries with a period under a minute read the
//! one-second buckets (so they see high-resolution data only); queries with a period of a
//! minute or more read the one-minute buckets, which hold both kinds. So high-resolution data
//! stays visible at one-minute granularity once its one-second buckets expire, as in
//! CloudWatch.
//!
//! Retention ([`MetricStore::expire`]): one-second buckets are kept three hours, one-minute
//! buckets fifteen days. CloudWatch goes on to keep five-minute rollups for 63 days and
//! one-hour rollups for 455 days; Berth keeps no rollups, so nothing older than fifteen days
//! can be queried.
//!
//! Reads take a shared lock on the in-memory series and never touch the disk. Writes take
//! the journal's lock, append, then merge into memory under the series' write lock; a
//! compaction holds the journal's lock while it rewrites, so no write slips between the
//! snapshot it writes and the journal it replaces.

use crate::journal::{self, Target};
use crate::{Datum, MetricError, SeriesKey, Stats, Unit};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// One-second buckets' width.
pub const SECOND_MS: i64 = 1_000;
/// One-minute buckets' width.
pub const MINUTE_MS: i64 = 60_000;
/// How long one-second (high-resolution) buckets are kept.
pub const HIGH_RESOLUTION_RETENTION_MS: i64 = 3 * 3_600_000;
/// How long one-minute buckets are kept. CloudWatch keeps coarser rollups for longer; Berth
/// keeps none.
pub const STANDARD_RETENTION_MS: i64 = 15 * 86_400_000;
/// A datum older than this (relative to now) is refused, as CloudWatch does.
pub const MAX_AGE_MS: i64 = 14 * 86_400_000;
/// A datum further than this in the future is refused, as CloudWatch does.
pub const MAX_AHEAD_MS: i64 = 2 * 3_600_000;
/// CloudWatch refuses values of larger magnitude than 2^360.
const MAX_MAGNITUDE: f64 = f64::from_bits((1023 + 360) << 52);
/// Non-durable writes are buffered up to this many bytes.
const FLUSH_BYTES: usize = 64 * 1024;
const JOURNAL: &str = "metrics.journal";
const JOURNAL_TMP: &str = "metrics.journal.tmp";
/// The least unit in `Unit`'s order, for range bounds.
const LEAST_UNIT: Unit = Unit::Seconds;

/// Which series ListMetrics wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub namespace: Option<String>,
    pub metric_name: Option<String>,
    /// (name, value): a series matches when it has a dimension of that name (and, when a
    /// value is given, of exactly that value), for every entry.
    pub dimensions: Vec<(String, Option<String>)>,
}

impl ListFilter {
    /// Whether `key` passes the filter.
    pub fn matches(&self, key: &SeriesKey) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| *ns == key.namespace)
            && self
                .metric_name
                .as_ref()
                .is_none_or(|name| *name == key.metric_name)
            && self.dimensions.iter().all(|(name, value)| {
                key.dimensions
                    .iter()
                    .any(|(n, v)| n == name && value.as_ref().is_none_or(|value| value == v))
            })
    }
}

/// Buckets by (start in ms, unit).
type Buckets = BTreeMap<(i64, Unit), Stats>;

#[derive(Debug)]
struct Series {
    /// The bytes one journal record of this series takes.
    record_bytes: usize,
    minute: Buckets,
    second: Buckets,
}

impl Series {
    fn new(key: &SeriesKey) -> Series {
        Series {
            record_bytes: journal::record_len(key),
            minute: Buckets::new(),
            second: Buckets::new(),
        }
    }

    fn apply(&mut self, target: Target, start: i64, unit: Unit, stats: Stats) {
        match target {
            Target::Minute => merge(&mut self.minute, start, unit, stats),
            Target::Second => merge(&mut self.second, start, unit, stats),
            Target::Both => {
                merge(&mut self.second, start, unit, stats);
                merge(&mut self.minute, floor(start, MINUTE_MS), unit, stats);
            }
        }
    }

    fn buckets(&self) -> usize {
        self.minute.len() + self.second.len()
    }

    /// The end of the newest bucket: data may lie just before it.
    fn last_end(&self) -> Option<i64> {
        let minute = self
            .minute
            .last_key_value()
            .map(|((t, _), _)| t.saturating_add(MINUTE_MS));
        let second = self
            .second
            .last_key_value()
            .map(|((t, _), _)| t.saturating_add(SECOND_MS));
        minute.max(second)
    }
}

type Map = BTreeMap<SeriesKey, Series>;

fn merge(buckets: &mut Buckets, start: i64, unit: Unit, stats: Stats) {
    buckets
        .entry((start, unit))
        .and_modify(|s| s.merge(stats))
        .or_insert(stats);
}

/// The multiple of `step` at or below `t`.
fn floor(t: i64, step: i64) -> i64 {
    t.saturating_sub(t.rem_euclid(step))
}

/// Where a datum's journal record merges: its target and bucket start.
fn placement(d: &Datum) -> (Target, i64) {
    if d.high_resolution {
        (Target::Both, floor(d.timestamp_ms, SECOND_MS))
    } else {
        (Target::Minute, floor(d.timestamp_ms, MINUTE_MS))
    }
}

/// Drops the buckets starting before `cut`; returns how many.
fn drop_before(buckets: &mut Buckets, cut: i64) -> usize {
    let kept = buckets.split_off(&(cut, LEAST_UNIT));
    let dropped = buckets.len();
    *buckets = kept;
    dropped
}

#[derive(Debug)]
struct Journal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Bytes of whole records in the file; writes go here.
    len: u64,
    /// Records of non-durable writes not yet in the file.
    pending: Vec<u8>,
    /// A write failed, so the file may lack merges memory holds: the next compaction
    /// rewrites it whatever its size.
    stale: bool,
    /// A compaction renamed a new journal in but the directory's fsync failed: the next
    /// durable write retries it before it is acknowledged.
    dir_unsynced: bool,
}

impl Journal {
    /// Writes the pending records (and fsyncs when `sync`). On failure the file is cut back
    /// to its last whole record and the pending records are dropped from it (memory keeps
    /// those of earlier non-durable writes; the next compaction writes them again).
    fn write_pending(&mut self, sync: bool) -> Result<(), MetricError> {
        if self.pending.is_empty() && !sync {
            return Ok(());
        }
        if sync && self.dir_unsynced {
            sync_dir(&self.dir)?;
            self.dir_unsynced = false;
        }
        match write_at(&mut self.file, self.len, &self.pending, sync) {
            Ok(()) => {
                self.len += self.pending.len() as u64;
                self.pending.clear();
                Ok(())
            }
            Err(source) => {
                let _ = self.file.set_len(self.len);
                self.pending.clear();
                self.stale = true;
                Err(MetricError::Io {
                    context: self.path.display().to_string(),
                    source,
                })
            }
        }
    }
}

fn write_at(file: &mut File, at: u64, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    if !bytes.is_empty() {
        file.seek(SeekFrom::Start(at))?;
        file.write_all(bytes)?;
    }
    if sync {
        file.sync_data()?;
    }
    Ok(())
}

/// The store. Share it behind an `Arc`; reads are cheap and concurrent, writes may block on
/// disk IO (call them from a blocking thread).
#[derive(Debug)]
pub struct MetricStore {
    /// `None` for a store in memory only.
    journal: Option<Mutex<Journal>>,
    series: RwLock<Map>,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> MetricError {
    let context = context.into();
    move |source| MetricError::Io { context, source }
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

fn sync_dir(dir: &Path) -> Result<(), MetricError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir.display().to_string()))
}

/// Checks a datum against PutMetricData's rules: a timestamp no more than two weeks old and
/// no more than two hours ahead of `now_ms`; finite values within ±2^360; a positive
/// SampleCount; Minimum no greater than Maximum.
pub fn check(datum: &Datum, now_ms: i64) -> Result<(), MetricError> {
    check_member(datum, now_ms, None)
}

/// [`check`], naming the batch member (`index` from 0) in its message.
fn check_member(d: &Datum, now_ms: i64, index: Option<usize>) -> Result<(), MetricError> {
    let member = match index {
        Some(i) => format!("MetricData.member.{}", i + 1),
        None => "MetricDatum".to_string(),
    };
    let ts = d.timestamp_ms;
    if ts < now_ms.saturating_sub(MAX_AGE_MS) {
        return Err(MetricError::Invalid(format!(
            "The parameter {member}.Timestamp must specify a time no more than two weeks in the past (got {ts} ms since the epoch; now is {now_ms})."
        )));
    }
    if ts > now_ms.saturating_add(MAX_AHEAD_MS) {
        return Err(MetricError::Invalid(format!(
            "The parameter {member}.Timestamp must specify a time no more than two hours in the future (got {ts} ms since the epoch; now is {now_ms})."
        )));
    }
    let s = &d.stats;
    let values = [s.sum, s.count, s.min, s.max];
    if !values
        .iter()
        .all(|v| v.is_finite() && v.abs() <= MAX_MAGNITUDE)
    {
        return Err(MetricError::Invalid(format!(
            "The values of {member} must be finite numbers within ±2^360 (got sum {}, count {}, minimum {}, maximum {}).",
            s.sum, s.count, s.min, s.max
        )));
    }
    if s.count <= 0.0 {
        return Err(MetricError::Invalid(format!(
            "The parameter {member}.StatisticValues.SampleCount must be greater than 0 (got {}).",
            s.count
        )));
    }
    if s.min > s.max {
        return Err(MetricError::Invalid(format!(
            "The parameter {member}.StatisticValues.Minimum ({}) must not be greater than its Maximum ({}).",
            s.min, s.max
        )));
    }
    Ok(())
}

impl MetricStore {
    /// Opens (or creates) the store under `dir`, replaying its journal. A torn or corrupt tail
    /// (a crash mid-write) is cut off, with a warning; what came before it is kept.
    pub fn open(dir: &Path) -> Result<MetricStore, MetricError> {
        fs::create_dir_all(dir).map_err(io(dir.display().to_string()))?;
        let tmp = dir.join(JOURNAL_TMP);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(tmp.display().to_string())(e)),
        }
        let path = dir.join(JOURNAL);
        let what = path.display().to_string();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(what.clone()))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(io(what.clone()))?;
        let mut map = Map::new();
        let mut at = 0;
        while let Some((rec, used)) = buf.get(at..).and_then(journal::decode) {
            map.entry(rec.key)
                .or_insert_with_key(Series::new)
                .apply(rec.target, rec.start, rec.unit, rec.stats);
            at += used;
        }
        if at < buf.len() {
            // A torn tail is a crash mid-write; anything longer may be damage: either way
            // what is cut is kept beside the journal for a person to look at.
            let cut = dir.join(format!("{JOURNAL}.cut-{at}"));
            fs::write(&cut, &buf[at..]).map_err(io(cut.display().to_string()))?;
            tracing::warn!(
                path = %what,
                kept = at,
                dropped = buf.len() - at,
                saved = %cut.display(),
                "cutting a torn or corrupt tail off the metrics journal"
            );
            file.set_len(at as u64).map_err(io(what.clone()))?;
            file.sync_all().map_err(io(what))?;
        }
        sync_dir(dir)?;
        Ok(MetricStore {
            journal: Some(Mutex::new(Journal {
                dir: dir.to_path_buf(),
                path,
                file,
                len: at as u64,
                pending: Vec::new(),
                stale: false,
                dir_unsynced: false,
            })),
            series: RwLock::new(map),
        })
    }

    /// A store with no journal: everything is lost when it is dropped.
    pub fn in_memory() -> MetricStore {
        MetricStore {
            journal: None,
            series: RwLock::new(Map::new()),
        }
    }

    /// Stores a batch: all of it, or (when a datum fails [`check`] or the disk fails)
    /// nothing. With `durable`, the journal is fsynced before this returns (acknowledged
    /// PutMetricData); without, the records may stay buffered until the next durable put or
    /// [`MetricStore::flush`] (internal publishers, which can lose the last seconds in a
    /// crash).
    pub fn put(&self, data: &[Datum], now_ms: i64, durable: bool) -> Result<(), MetricError> {
        for (i, d) in data.iter().enumerate() {
            check_member(d, now_ms, Some(i))?;
        }
        let keys: Vec<Cow<'_, SeriesKey>> = data.iter().map(|d| d.key.normalized()).collect();
        let _journal = match &self.journal {
            Some(j) => {
                let mut records = Vec::new();
                for (d, key) in data.iter().zip(&keys) {
                    let (target, start) = placement(d);
                    journal::encode(&mut records, target, key, start, d.unit, &d.stats);
                }
                let mut j = lock(j);
                j.pending.extend_from_slice(&records);
                if durable || j.pending.len() >= FLUSH_BYTES {
                    j.write_pending(durable)?;
                }
                // Held while memory is updated, so a compaction sees this batch in memory
                // whenever its records are in the journal.
                Some(j)
            }
            None => None,
        };
        let mut map = write(&self.series);
        for (d, key) in data.iter().zip(&keys) {
            let (target, start) = placement(d);
            match map.get_mut(&**key) {
                Some(series) => series.apply(target, start, d.unit, d.stats),
                None => {
                    let mut series = Series::new(key);
                    series.apply(target, start, d.unit, d.stats);
                    map.insert(SeriesKey::clone(key), series);
                }
            }
        }
        Ok(())
    }

    /// Writes and fsyncs what non-durable puts left buffered.
    pub fn flush(&self) -> Result<(), MetricError> {
        match &self.journal {
            Some(j) => lock(j).write_pending(true),
            None => Ok(()),
        }
    }

    /// Rewrites the journal as one record per bucket when it has grown past twice that size
    /// (or a failed write left it behind memory): the state goes to `metrics.journal.tmp`,
    /// is fsynced and renamed over the journal. Returns whether it rewrote.
    pub fn compact(&self) -> Result<bool, MetricError> {
        let Some(j) = &self.journal else {
            return Ok(false);
        };
        let mut j = lock(j);
        let state = {
            let map = read(&self.series);
            let needed: usize = map.values().map(|s| s.record_bytes * s.buckets()).sum();
            let size = j.len + j.pending.len() as u64;
            if !j.stale && size <= 2 * needed as u64 {
                return Ok(false);
            }
            let mut state = Vec::with_capacity(needed);
            for (key, s) in map.iter() {
                for (&(start, unit), stats) in &s.second {
                    journal::encode(&mut state, Target::Second, key, start, unit, stats);
                }
                for (&(start, unit), stats) in &s.minute {
                    journal::encode(&mut state, Target::Minute, key, start, unit, stats);
                }
            }
            state
        };
        let tmp = j.dir.join(JOURNAL_TMP);
        let what = tmp.display().to_string();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io(what.clone()))?;
        if let Err(e) = file.write_all(&state).and_then(|()| file.sync_all()) {
            let _ = fs::remove_file(&tmp);
            return Err(io(what)(e));
        }
        if let Err(e) = fs::rename(&tmp, &j.path) {
            let _ = fs::remove_file(&tmp);
            return Err(io(j.path.display().to_string())(e));
        }
        // The file is the journal now, whatever the directory's fsync says.
        j.file = file;
        j.len = state.len() as u64;
        j.pending.clear();
        j.stale = false;
        if let Err(e) = sync_dir(&j.dir) {
            j.dir_unsynced = true;
            return Err(e);
        }
        Ok(true)
    }

    /// Drops the buckets past retention (one-second buckets after three hours, one-minute
    /// buckets after fifteen days) and the series left with none, then compacts the journal
    /// if it is due (so expired data leaves the disk). Returns the buckets dropped. A failed
    /// compaction is logged; the journal is merely larger than it needs to be.
    pub fn expire(&self, now_ms: i64) -> usize {
        let second_cut = now_ms.saturating_sub(HIGH_RESOLUTION_RETENTION_MS);
        let minute_cut = now_ms.saturating_sub(STANDARD_RETENTION_MS);
        let mut dropped = 0;
        write(&self.series).retain(|_, s| {
            dropped += drop_before(&mut s.second, second_cut);
            dropped += drop_before(&mut s.minute, minute_cut);
            s.buckets() > 0
        });
        if let Err(e) = self.compact() {
            tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "compacting the metrics journal failed");
        }
        dropped
    }

    /// The statistics of `key`'s buckets in `[start_ms, end_ms)`, aggregated into periods of
    /// `period_s` seconds as CloudWatch does: the start is rounded down (to the minute for
    /// periods of a minute or more, to the period below that) and periods run from there; each
    /// entry is (period start in ms, unit, statistics), ascending by time, then unit. A
    /// period under 60 s reads one-second buckets (high-resolution data only); 60 s or more
    /// reads one-minute buckets (all data). With `unit`, only buckets of that unit count;
    /// without, each unit seen in a period gets an entry of its own, as CloudWatch returns
    /// them. A period that is not positive yields nothing.
    pub fn statistics(
        &self,
        key: &SeriesKey,
        start_ms: i64,
        end_ms: i64,
        period_s: i64,
        unit: Option<Unit>,
    ) -> Vec<(i64, Unit, Stats)> {
        if period_s <= 0 || start_ms >= end_ms {
            return Vec::new();
        }
        let period_ms = period_s.saturating_mul(1000);
        let start = floor(start_ms, if period_s < 60 { period_ms } else { MINUTE_MS });
        // Periods start at `start` and every period after it.
        let offset = start.rem_euclid(period_ms);
        let key = key.normalized();
        let map = read(&self.series);
        let Some(series) = map.get(&*key) else {
            return Vec::new();
        };
        let buckets = if period_s < 60 {
            &series.second
        } else {
            &series.minute
        };
        let mut periods: BTreeMap<(i64, Unit), Stats> = BTreeMap::new();
        for (&(t, u), stats) in buckets.range((start, LEAST_UNIT)..) {
            if t >= end_ms {
                break;
            }
            if unit.is_some_and(|want| want != u) {
                continue;
            }
            let at = floor(t.saturating_sub(offset), period_ms).saturating_add(offset);
            merge(&mut periods, at, u, *stats);
        }
        periods.into_iter().map(|((t, u), s)| (t, u, s)).collect()
    }

    /// The series `filter` matches, sorted by namespace, metric name, then dimensions. With
    /// `active_since_ms`, only those with a bucket reaching that time or later (ListMetrics'
    /// RecentlyActive). A series is listed while it has data within retention.
    pub fn list(&self, filter: &ListFilter, active_since_ms: Option<i64>) -> Vec<SeriesKey> {
        read(&self.series)
            .iter()
            .filter(|(key, s)| {
                filter.matches(key)
                    && active_since_ms.is_none_or(|t| s.last_end().is_some_and(|end| end > t))
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Wipes every series, in memory and on disk (a server reset).
    pub fn clear(&self) -> Result<(), MetricError> {
        let journal = self.journal.as_ref().map(lock);
        if let Some(mut j) = journal {
            j.pending.clear();
            if let Err(e) = j.file.set_len(0).and_then(|()| j.file.sync_all()) {
                j.stale = true;
                return Err(io(j.path.display().to_string())(e));
            }
            j.len = 0;
            j.stale = false;
            // Cleared under the journal's lock, so no put lands between the two.
            write(&self.series).clear();
        } else {
            write(&self.series).clear();
        }
        Ok(())
    }

    /// How many series hold data.
    pub fn series_count(&self) -> usize {
        read(&self.series).len()
    }

    /// How many buckets (one-second and one-minute) are held.
    pub fn bucket_count(&self) -> usize {
        read(&self.series).values().map(Series::buckets).sum()
    }

    /// The journal's size, buffered records included (0 in memory).
    pub fn journal_bytes(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| {
            let j = lock(j);
            j.len + j.pending.len() as u64
        })
    }
}

impl Drop for MetricStore {
    /// Writes what non-durable puts left buffered (a clean shutdown loses nothing).
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, cause = ?std::error::Error::source(&e), "flushing the metrics journal failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_align_below_and_at_zero() {
        assert_eq!(
            floor(61_500, MINUTE_MS),
            60_000,
            "a positive time rounds down"
        );
        assert_eq!(floor(60_000, MINUTE_MS), 60_000, "an aligned time stays");
        assert_eq!(
            floor(-1, SECOND_MS),
            -1_000,
            "a negative time rounds down too"
        );
        assert_eq!(
            floor(i64::MIN + 5, 10),
            i64::MIN,
            "no overflow at the far end"
        );
    }

    #[test]
    fn drop_before_splits_at_the_cut() {
        let mut b = Buckets::new();
        for t in [0, 60_000, 120_000] {
            merge(&mut b, t, Unit::Count, Stats::from_value(1.0));
            merge(&mut b, t, Unit::None, Stats::from_value(1.0));
        }
        assert_eq!(
            drop_before(&mut b, 60_000),
            2,
            "both units of the first minute"
        );
        assert_eq!(b.len(), 4, "the later minutes stay, both units");
        assert_eq!(
            drop_before(&mut b, 60_000),
            0,
            "nothing left before the cut"
        );
    }

    #[test]
    fn the_store_is_shareable() {
        fn shareable<T: Send + Sync>() {}
        shareable::<MetricStore>();
    }
}
