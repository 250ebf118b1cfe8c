//! The metric store against its promises: datums aggregate into aligned periods per unit,
//! ListMetrics' filters pick the right series, bad batches store nothing, retention drops
//! what is past it, and the journal gives back exactly what was stored across reopenings,
//! torn tails, compactions and clears.

use berth_cloudwatch::{
    check, Datum, ListFilter, MetricError, MetricStore, SeriesKey, Stats, Unit,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An hour boundary (so a multiple of every period the tests use), where their data starts.
const T0: i64 = 1_699_999_200_000;
const NOW: i64 = T0 + HOUR;
const S: i64 = 1_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

fn key(ns: &str, name: &str, dims: &[(&str, &str)]) -> SeriesKey {
    SeriesKey::new(
        ns,
        name,
        dims.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    )
}

fn cpu() -> SeriesKey {
    key("AWS/ECS", "CPUUtilization", &[("ClusterName", "prod")])
}

fn datum(key: &SeriesKey, ts: i64, unit: Unit, v: f64) -> Datum {
    Datum {
        key: key.clone(),
        timestamp_ms: ts,
        unit,
        stats: Stats::from_value(v),
        high_resolution: false,
    }
}

fn high(key: &SeriesKey, ts: i64, unit: Unit, v: f64) -> Datum {
    Datum {
        high_resolution: true,
        ..datum(key, ts, unit, v)
    }
}

fn stats(sum: f64, count: f64, min: f64, max: f64) -> Stats {
    Stats {
        sum,
        count,
        min,
        max,
    }
}

fn journal(dir: &Path) -> PathBuf {
    dir.join("metrics.journal")
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path)
        .map(|m| m.len())
        .expect("the journal should exist")
}

fn open(dir: &Path) -> MetricStore {
    MetricStore::open(dir).expect("the store should open")
}

/// Every statistic of every series at several periods: what must survive a reopening.
type Snapshot = Vec<(SeriesKey, i64, Vec<(i64, Unit, Stats)>)>;

fn snapshot(s: &MetricStore) -> Snapshot {
    let mut out = Vec::new();
    for k in s.list(&ListFilter::default(), None) {
        for period in [1, 5, 60, 300, 3600] {
            let got = s.statistics(&k, 0, i64::MAX, period, None);
            out.push((k.clone(), period, got));
        }
    }
    out
}

#[test]
fn standard_datums_aggregate_into_aligned_periods() {
    let s = MetricStore::in_memory();
    let k = cpu();
    let p = Unit::Percent;
    s.put(
        &[
            datum(&k, T0 + 10 * S, p, 1.0),
            datum(&k, T0 + 50 * S, p, 3.0),
            datum(&k, T0 + 70 * S, p, 5.0),
            datum(&k, T0 + 250 * S, p, 7.0),
            datum(&k, T0 + 310 * S, p, 11.0),
        ],
        NOW,
        true,
    )
    .expect("an in-range batch should be stored");
    assert_eq!(
        s.statistics(&k, T0, T0 + 10 * MIN, 60, None),
        vec![
            (T0, p, stats(4.0, 2.0, 1.0, 3.0)),
            (T0 + MIN, p, stats(5.0, 1.0, 5.0, 5.0)),
            (T0 + 4 * MIN, p, stats(7.0, 1.0, 7.0, 7.0)),
            (T0 + 5 * MIN, p, stats(11.0, 1.0, 11.0, 11.0)),
        ],
        "60-second periods should hold each minute's datums"
    );
    assert_eq!(
        s.statistics(&k, T0, T0 + 10 * MIN, 300, None),
        vec![
            (T0, p, stats(16.0, 4.0, 1.0, 7.0)),
            (T0 + 5 * MIN, p, stats(11.0, 1.0, 11.0, 11.0)),
        ],
        "300-second periods should hold five minutes each, aligned to the epoch"
    );
    assert_eq!(
        s.statistics(&k, T0 + MIN + 15 * S, T0 + 5 * MIN, 300, None),
        vec![(T0 + MIN, p, stats(12.0, 2.0, 5.0, 7.0))],
        "the start rounds down to its minute, periods run from there, and only buckets before the end count"
    );
    assert!(
        s.statistics(&k, T0, T0 + 10 * MIN, 1, None).is_empty(),
        "standard-resolution data has no one-second buckets"
    );
    assert!(
        s.statistics(&k, T0, T0 + 10 * MIN, 0, None).is_empty(),
        "a period of zero yields nothing"
    );
    assert!(
        s.statistics(&cpu(), T0 + 10 * MIN, T0, 60, None).is_empty(),
        "an empty range yields nothing"
    );
    let other = key("AWS/ECS", "CPUUtilization", &[("ClusterName", "dev")]);
    assert!(
        s.statistics(&other, T0, T0 + 10 * MIN, 60, None).is_empty(),
        "another series has no data"
    );
    // The same series named with its dimensions in another order, by hand.
    let two = key("NS", "M", &[("a", "1"), ("b", "2")]);
    s.put(&[datum(&two, T0, p, 1.0)], NOW, true)
        .expect("a datum of two dimensions should be stored");
    let by_hand = SeriesKey {
        namespace: "NS".into(),
        metric_name: "M".into(),
        dimensions: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
    };
    assert_eq!(
        s.statistics(&by_hand, T0, T0 + MIN, 60, None),
        vec![(T0, p, stats(1.0, 1.0, 1.0, 1.0))],
        "the order of dimensions in a query should not matter"
    );
}

#[test]
fn high_resolution_datums_have_one_second_buckets_and_count_in_minutes() {
    let s = MetricStore::in_memory();
    let k = key("App", "Latency", &[]);
    let ms = Unit::Milliseconds;
    s.put(
        &[
            high(&k, T0 + 1_200, ms, 2.0),
            high(&k, T0 + 1_700, ms, 4.0),
            high(&k, T0 + 3_000, ms, 6.0),
            datum(&k, T0 + 2_000, ms, 100.0),
        ],
        NOW,
        true,
    )
    .expect("a mixed-resolution batch should be stored");
    assert_eq!(
        s.statistics(&k, T0, T0 + MIN, 1, None),
        vec![
            (T0 + S, ms, stats(6.0, 2.0, 2.0, 4.0)),
            (T0 + 3 * S, ms, stats(6.0, 1.0, 6.0, 6.0)),
        ],
        "1-second periods should hold only the high-resolution datums, per second"
    );
    assert_eq!(
        s.statistics(&k, T0, T0 + MIN, 5, None),
        vec![(T0, ms, stats(12.0, 3.0, 2.0, 6.0))],
        "5-second periods should gather the high-resolution seconds"
    );
    assert_eq!(
        s.statistics(&k, T0, T0 + MIN, 60, None),
        vec![(T0, ms, stats(112.0, 4.0, 2.0, 100.0))],
        "a 60-second period should merge both resolutions"
    );
    assert_eq!(
        s.bucket_count(),
        3,
        "two one-second buckets and one minute bucket"
    );
}

#[test]
fn units_are_filtered_and_kept_apart() {
    let s = MetricStore::in_memory();
    let k = cpu();
    s.put(
        &[
            datum(&k, T0 + 5 * S, Unit::Count, 1.0),
            datum(&k, T0 + 6 * S, Unit::Bytes, 10.0),
            datum(&k, T0 + 65 * S, Unit::Count, 2.0),
        ],
        NOW,
        true,
    )
    .expect("a batch of two units should be stored");
    assert_eq!(
        s.statistics(&k, T0, T0 + 2 * MIN, 60, None),
        vec![
            (T0, Unit::Bytes, stats(10.0, 1.0, 10.0, 10.0)),
            (T0, Unit::Count, stats(1.0, 1.0, 1.0, 1.0)),
            (T0 + MIN, Unit::Count, stats(2.0, 1.0, 2.0, 2.0)),
        ],
        "without a unit filter each unit of a period should be an entry of its own"
    );
    assert_eq!(
        s.statistics(&k, T0, T0 + 2 * MIN, 60, Some(Unit::Count)),
        vec![
            (T0, Unit::Count, stats(1.0, 1.0, 1.0, 1.0)),
            (T0 + MIN, Unit::Count, stats(2.0, 1.0, 2.0, 2.0)),
        ],
        "a unit filter should keep only that unit"
    );
    assert!(
        s.statistics(&k, T0, T0 + 2 * MIN, 60, Some(Unit::Seconds))
            .is_empty(),
        "a unit never stored should find nothing"
    );
}

#[test]
fn list_filters_by_namespace_name_dimensions_and_activity() {
    let s = MetricStore::in_memory();
    let a = key("AWS/ECS", "CPUUtilization", &[("ClusterName", "a")]);
    let b = key(
        "AWS/ECS",
        "CPUUtilization",
        &[("ServiceName", "web"), ("ClusterName", "b")],
    );
    let c = key("AWS/ECS", "MemoryUtilization", &[("ClusterName", "a")]);
    let d = key(
        "ECS/ContainerInsights",
        "CpuUtilized",
        &[("ClusterName", "a"), ("ServiceName", "web")],
    );
    let e = key("Custom/App", "Requests", &[]);
    let recent = NOW - 10 * MIN;
    s.put(
        &[
            datum(&d, recent, Unit::None, 1.0),
            datum(&c, recent, Unit::Percent, 1.0),
            datum(&b, recent, Unit::Percent, 1.0),
            datum(&a, recent, Unit::Percent, 1.0),
            datum(&e, NOW - 5 * HOUR, Unit::Count, 1.0),
        ],
        NOW,
        true,
    )
    .expect("the batch should be stored");
    let list = |f: ListFilter, since: Option<i64>| s.list(&f, since);
    let dims = |d: &[(&str, Option<&str>)]| ListFilter {
        dimensions: d
            .iter()
            .map(|(n, v)| (n.to_string(), v.map(str::to_string)))
            .collect(),
        ..ListFilter::default()
    };
    assert_eq!(
        list(ListFilter::default(), None),
        vec![a.clone(), b.clone(), c.clone(), e.clone(), d.clone()],
        "no filter should list every series, sorted by namespace, name, dimensions"
    );
    let ecs = ListFilter {
        namespace: Some("AWS/ECS".into()),
        ..ListFilter::default()
    };
    assert_eq!(
        list(ecs.clone(), None),
        vec![a.clone(), b.clone(), c.clone()],
        "a namespace filter should keep that namespace"
    );
    let cpu_name = ListFilter {
        metric_name: Some("CPUUtilization".into()),
        ..ListFilter::default()
    };
    assert_eq!(
        list(cpu_name, None),
        vec![a.clone(), b.clone()],
        "a metric name filter should keep that name"
    );
    let ecs_memory = ListFilter {
        metric_name: Some("MemoryUtilization".into()),
        ..ecs
    };
    assert_eq!(
        list(ecs_memory, None),
        vec![c.clone()],
        "namespace and name together"
    );
    assert_eq!(
        list(dims(&[("ServiceName", None)]), None),
        vec![b.clone(), d.clone()],
        "a dimension name alone should match any value"
    );
    assert_eq!(
        list(dims(&[("ClusterName", Some("a"))]), None),
        vec![a.clone(), c.clone(), d.clone()],
        "a dimension with a value should match exactly"
    );
    assert_eq!(
        list(
            dims(&[("ClusterName", Some("a")), ("ServiceName", None)]),
            None
        ),
        vec![d.clone()],
        "every dimension of the filter should be required"
    );
    assert!(
        list(dims(&[("ClusterName", Some("zzz"))]), None).is_empty(),
        "an unknown value should match nothing"
    );
    assert_eq!(
        list(ListFilter::default(), Some(NOW - 3 * HOUR)),
        vec![a.clone(), b.clone(), c.clone(), d.clone()],
        "a series without data in the last three hours is not recently active"
    );
    assert_eq!(
        list(ListFilter::default(), Some(NOW - 6 * HOUR)).len(),
        5,
        "every series has data in the last six hours"
    );
    assert!(
        list(ListFilter::default(), Some(NOW)).is_empty(),
        "nothing has data from now on"
    );
}

#[test]
fn a_batch_with_a_datum_out_of_the_window_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = cpu();
    {
        let s = open(dir.path());
        let good = datum(&k, NOW, Unit::Count, 1.0);
        for (bad, what) in [
            (NOW - 14 * DAY - 1, "two weeks in the past"),
            (NOW + 2 * HOUR + 1, "two hours in the future"),
        ] {
            let err = s
                .put(&[good.clone(), datum(&k, bad, Unit::Count, 1.0)], NOW, true)
                .expect_err("a datum out of the window should refuse the batch");
            match err {
                MetricError::Invalid(m) => {
                    assert!(
                        m.contains("MetricData.member.2.Timestamp") && m.contains(what),
                        "the message should name the member and the rule: {m}"
                    )
                }
                other => panic!("expected Invalid, got {other:?}"),
            }
        }
        assert_eq!(s.series_count(), 0, "no series should have been stored");
        assert_eq!(s.bucket_count(), 0, "no bucket should have been stored");
        assert_eq!(s.journal_bytes(), 0, "nothing should have been journaled");
    }
    assert_eq!(
        open(dir.path()).series_count(),
        0,
        "nothing should come back after reopening"
    );
    check(&datum(&k, NOW - 14 * DAY, Unit::Count, 1.0), NOW)
        .expect("exactly two weeks old should be accepted");
    check(&datum(&k, NOW + 2 * HOUR, Unit::Count, 1.0), NOW)
        .expect("exactly two hours ahead should be accepted");
    assert!(
        check(&datum(&k, NOW, Unit::Count, f64::NAN), NOW).is_err(),
        "NaN should be refused"
    );
    assert!(
        check(&datum(&k, NOW, Unit::Count, f64::INFINITY), NOW).is_err(),
        "infinity should be refused"
    );
    let mut empty = datum(&k, NOW, Unit::Count, 1.0);
    empty.stats.count = 0.0;
    assert!(
        check(&empty, NOW).is_err(),
        "a SampleCount of 0 should be refused"
    );
    let mut upside_down = datum(&k, NOW, Unit::Count, 1.0);
    upside_down.stats.min = 2.0;
    assert!(
        check(&upside_down, NOW).is_err(),
        "a Minimum above the Maximum should be refused"
    );
}

#[test]
fn expire_drops_old_buckets_and_empty_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let std_key = key("App", "Standard", &[]);
    let high_key = key("App", "High", &[]);
    {
        let s = open(dir.path());
        s.put(
            &[
                datum(&std_key, NOW, Unit::Count, 1.0),
                high(&high_key, NOW, Unit::Count, 2.0),
            ],
            NOW,
            true,
        )
        .expect("the batch should be stored");
        assert_eq!(
            s.bucket_count(),
            3,
            "a minute bucket each, and a second bucket for the high-resolution datum"
        );
        assert_eq!(
            s.expire(NOW + HOUR),
            0,
            "nothing is past retention after an hour"
        );
        assert_eq!(
            s.expire(NOW + 3 * HOUR + MIN),
            1,
            "the one-second bucket should go after three hours"
        );
        assert_eq!(
            s.series_count(),
            2,
            "both series still have a minute bucket"
        );
        assert!(
            s.statistics(&high_key, NOW, NOW + MIN, 1, None).is_empty(),
            "the expired one-second bucket should not be read"
        );
        assert_eq!(
            s.statistics(&high_key, NOW, NOW + MIN, 60, None),
            vec![(NOW, Unit::Count, stats(2.0, 1.0, 2.0, 2.0))],
            "high-resolution data should stay visible at one minute"
        );
        assert_eq!(
            s.expire(NOW + 15 * DAY + MIN),
            2,
            "the minute buckets should go after fifteen days"
        );
        assert_eq!(
            s.series_count(),
            0,
            "series without buckets should disappear"
        );
        assert_eq!(s.bucket_count(), 0, "no bucket should be left");
        assert!(
            s.list(&ListFilter::default(), None).is_empty(),
            "an expired series should not be listed"
        );
        assert_eq!(
            file_len(&journal(dir.path())),
            0,
            "expired data should leave the disk"
        );
    }
    assert_eq!(
        open(dir.path()).series_count(),
        0,
        "expired data should not come back after reopening"
    );
}

#[test]
fn a_reopened_store_gives_identical_statistics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k1 = cpu();
    let k2 = key("App", "Latency", &[("Host", "h1")]);
    let (before, buckets) = {
        let s = open(dir.path());
        for batch in 0..10i64 {
            let data: Vec<Datum> = (0..20i64)
                .map(|i| {
                    let ts = T0 + batch * 37 * S + i * 1_300;
                    // Fractions, so a different order of merging would show in the sums.
                    let v = 0.1 * (batch * 20 + i) as f64;
                    if i % 3 == 0 {
                        high(&k2, ts, Unit::Milliseconds, v)
                    } else {
                        datum(&k1, ts, Unit::Percent, v)
                    }
                })
                .collect();
            s.put(&data, NOW, batch % 2 == 0)
                .expect("the batch should be stored");
        }
        (snapshot(&s), s.bucket_count())
    };
    assert!(!before.is_empty(), "the test should have stored something");
    let s = open(dir.path());
    assert_eq!(
        s.bucket_count(),
        buckets,
        "the same buckets should come back"
    );
    assert!(
        snapshot(&s) == before,
        "statistics after reopening should be bit-for-bit those before"
    );
}

#[test]
fn a_torn_or_corrupt_tail_is_cut_and_earlier_data_survives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = journal(dir.path());
    let k = cpu();
    let (len1, first, len2, both) = {
        let s = open(dir.path());
        s.put(
            &[
                datum(&k, T0, Unit::Count, 1.0),
                high(&k, T0 + 90 * S, Unit::Count, 2.0),
            ],
            NOW,
            true,
        )
        .expect("the first batch should be stored");
        let len1 = file_len(&path);
        let first = snapshot(&s);
        s.put(&[datum(&k, T0 + 10 * MIN, Unit::Count, 3.0)], NOW, true)
            .expect("the second batch should be stored");
        (len1, first, file_len(&path), snapshot(&s))
    };
    assert!(
        len2 > len1,
        "the second batch should have grown the journal"
    );

    // Garbage after the last record: a header promising more than is there.
    OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(b"\x13\x00\x00\x00garbage!"))
        .expect("appending garbage");
    {
        let s = open(dir.path());
        assert!(
            snapshot(&s) == both,
            "garbage after the last record should not lose any data"
        );
        assert_eq!(file_len(&path), len2, "the garbage should be cut off");
        let saved = dir.path().join(format!("metrics.journal.cut-{len2}"));
        assert_eq!(
            std::fs::read(&saved).expect("what was cut is kept beside the journal"),
            b"\x13\x00\x00\x00garbage!"
        );
    }

    // A crash in the middle of the last record.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(len2 - 3))
        .expect("truncating the journal");
    {
        let s = open(dir.path());
        assert!(
            snapshot(&s) == first,
            "a torn last record should be dropped and the batch before it kept"
        );
        assert_eq!(file_len(&path), len1, "the torn record should be cut off");
        s.put(&[datum(&k, T0 + 10 * MIN, Unit::Count, 3.0)], NOW, true)
            .expect("writing after a cut should work");
        assert!(
            snapshot(&s) == both,
            "the record written again should read as before"
        );
    }

    // A flipped bit inside the last record.
    let mut bytes = fs::read(&path).expect("reading the journal");
    assert_eq!(
        bytes.len() as u64,
        len2,
        "the rewritten record should be the same size"
    );
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(&path, &bytes).expect("corrupting the journal");
    let s = open(dir.path());
    assert!(
        snapshot(&s) == first,
        "a corrupt last record should be dropped and the batch before it kept"
    );
    assert_eq!(
        file_len(&path),
        len1,
        "the corrupt record should be cut off"
    );
}

#[test]
fn compaction_shrinks_the_journal_and_keeps_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = journal(dir.path());
    let k = cpu();
    let (before, small) = {
        let s = open(dir.path());
        for batch in 0..4i64 {
            let data: Vec<Datum> = (0..50i64)
                .map(|i| {
                    let n = batch * 50 + i;
                    let d = datum(&k, T0 + (n % 3) * MIN + n, Unit::Count, 0.5 * n as f64);
                    Datum {
                        high_resolution: n % 7 == 0,
                        ..d
                    }
                })
                .collect();
            s.put(&data, NOW, true).expect("the batch should be stored");
        }
        let big = file_len(&path);
        let before = snapshot(&s);
        assert!(
            s.compact().expect("compaction should succeed"),
            "200 records over a few buckets should be compacted"
        );
        let small = file_len(&path);
        assert!(
            small < big / 10,
            "compaction should shrink the journal ({big} bytes to {small})"
        );
        assert_eq!(
            s.journal_bytes(),
            small,
            "the store should know the new size"
        );
        assert!(
            snapshot(&s) == before,
            "compaction should not change what memory holds"
        );
        assert!(
            !s.compact().expect("a second compaction should succeed"),
            "a freshly compacted journal should not be rewritten"
        );
        (before, small)
    };
    assert!(
        !dir.path().join("metrics.journal.tmp").exists(),
        "no temporary file should be left"
    );
    let s = open(dir.path());
    assert!(
        snapshot(&s) == before,
        "the compacted journal should replay to identical statistics"
    );
    assert_eq!(
        file_len(&path),
        small,
        "reopening should not change the journal"
    );
}

#[test]
fn non_durable_puts_reach_the_disk_on_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = cpu();
    let s = open(dir.path());
    s.put(&[datum(&k, T0, Unit::Count, 1.0)], NOW, false)
        .expect("the batch should be stored");
    assert_eq!(
        s.statistics(&k, T0, T0 + MIN, 60, None).len(),
        1,
        "a non-durable put should be readable at once"
    );
    assert!(
        s.journal_bytes() > 0,
        "the record should be counted while buffered"
    );
    s.flush().expect("flush should succeed");
    assert_eq!(
        file_len(&journal(dir.path())),
        s.journal_bytes(),
        "after a flush every record should be in the file"
    );
    drop(s);
    assert_eq!(
        open(dir.path())
            .statistics(&k, T0, T0 + MIN, 60, None)
            .len(),
        1,
        "a flushed datum should come back"
    );
}

#[test]
fn clear_wipes_memory_and_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = cpu();
    {
        let s = open(dir.path());
        s.put(&[datum(&k, T0, Unit::Count, 1.0)], NOW, true)
            .expect("the batch should be stored");
        s.clear().expect("clear should succeed");
        assert_eq!(s.series_count(), 0, "no series should be left");
        assert_eq!(s.bucket_count(), 0, "no bucket should be left");
        assert_eq!(
            file_len(&journal(dir.path())),
            0,
            "the journal should be empty"
        );
        assert!(
            s.statistics(&k, T0, T0 + MIN, 60, None).is_empty(),
            "cleared data should not be read"
        );
        s.put(&[datum(&k, T0 + MIN, Unit::Count, 5.0)], NOW, true)
            .expect("a put after clear should be stored");
    }
    let s = open(dir.path());
    assert_eq!(
        s.statistics(&k, T0, T0 + 2 * MIN, 60, None),
        vec![(T0 + MIN, Unit::Count, stats(5.0, 1.0, 5.0, 5.0))],
        "only what was put after the clear should come back"
    );
}

#[test]
fn concurrent_writers_and_readers_agree() {
    let s = MetricStore::in_memory();
    std::thread::scope(|scope| {
        for w in 0..4 {
            let s = &s;
            scope.spawn(move || {
                let writer = w.to_string();
                let k = key("App", "M", &[("Writer", writer.as_str())]);
                for i in 0..100 {
                    s.put(&[datum(&k, T0 + i * S, Unit::Count, 1.0)], NOW, false)
                        .expect("a concurrent put should be stored");
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..100 {
                let _ = s.list(&ListFilter::default(), None);
            }
        });
    });
    assert_eq!(s.series_count(), 4, "one series per writer");
    for k in s.list(&ListFilter::default(), None) {
        let total: f64 = s
            .statistics(&k, T0, T0 + HOUR, 3600, None)
            .iter()
            .map(|(_, _, st)| st.count)
            .sum();
        assert_eq!(total, 100.0, "every datum of {k:?} should be counted");
    }
}

/// The straightforward recomputation: each datum's period from its own timestamp, merged.
fn recompute(data: &[Datum], key: &SeriesKey, period_s: i64) -> Vec<(i64, Unit, Stats)> {
    let mut periods: BTreeMap<(i64, Unit), Stats> = BTreeMap::new();
    let period_ms = period_s * 1000;
    for d in data
        .iter()
        .filter(|d| d.key == *key && (period_s >= 60 || d.high_resolution))
    {
        let start = d.timestamp_ms.div_euclid(period_ms) * period_ms;
        periods
            .entry((start, d.unit))
            .and_modify(|s| s.merge(d.stats))
            .or_insert(d.stats);
    }
    periods.into_iter().map(|((t, u), s)| (t, u, s)).collect()
}

const UNITS: [Unit; 3] = [Unit::Count, Unit::Bytes, Unit::Seconds];

fn prop_keys() -> [SeriesKey; 3] {
    [
        key("Prop", "M0", &[("D", "x")]),
        key("Prop", "M1", &[]),
        key("Other", "M0", &[("B", "2"), ("A", "1")]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Random datums (integer-valued, so any order of summing is exact) put in random batches,
    /// durable or not, with a compaction somewhere: before and after reopening, every
    /// series' statistics over the whole range equal a recomputation from the datums.
    #[test]
    fn statistics_equal_a_recomputation_after_reopening(
        raw in prop::collection::vec(
            (0usize..3, 0i64..20, 0i64..5, 0i64..1000, 0usize..3, -1000i32..1000, 1u8..4, 0u8..5, any::<bool>()),
            1..120),
        cuts in prop::collection::vec(0usize..120, 0..6),
        durable in prop::collection::vec(any::<bool>(), 8),
        compact_after in prop::option::of(0usize..8),
    ) {
        let keys = prop_keys();
        let data: Vec<Datum> = raw
            .iter()
            .map(|&(k, minute, second, ms, unit, value, count, spread, high_resolution)| {
                let (v, n, spread) = (f64::from(value), f64::from(count), f64::from(spread));
                Datum {
                    key: keys[k].clone(),
                    timestamp_ms: T0 + minute * MIN + second * S + ms,
                    unit: UNITS[unit],
                    stats: Stats { sum: v * n, count: n, min: v - spread, max: v + spread },
                    high_resolution,
                }
            })
            .collect();
        let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
        bounds.push(0);
        bounds.push(data.len());
        bounds.sort_unstable();
        bounds.dedup();

        let dir = tempfile::tempdir().expect("tempdir");
        let verify = |s: &MetricStore, when: &str| -> Result<(), TestCaseError> {
            for key in &keys {
                for period in [1, 5, 60, 300, 3600] {
                    prop_assert_eq!(
                        s.statistics(key, 0, i64::MAX, period, None),
                        recompute(&data, key, period),
                        "statistics of {:?} at period {} {}", key, period, when
                    );
                }
            }
            Ok(())
        };
        {
            let s = open(dir.path());
            for (i, w) in bounds.windows(2).enumerate() {
                s.put(&data[w[0]..w[1]], NOW, durable[i % durable.len()])
                    .expect("an in-range batch should be stored");
                if compact_after == Some(i) {
                    s.compact().expect("compaction should succeed");
                }
            }
            verify(&s, "before reopening")?;
        }
        let s = open(dir.path());
        verify(&s, "after reopening")?;
        let listed = s.list(&ListFilter::default(), None);
        let mut stored: Vec<SeriesKey> = data.iter().map(|d| d.key.clone()).collect();
        stored.sort();
        stored.dedup();
        prop_assert_eq!(listed, stored, "the series listed should be those put");
    }
}
