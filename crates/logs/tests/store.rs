//! The log store against its promises: every acknowledged event is read back exactly once, in
//! order, in pages either way, across segments and reopenings; torn tails are cut; retention
//! drops what is past it; a resent batch is stored once; bad batches store nothing.

use berth_logs::pattern::Pattern;
use berth_logs::store::{check_batch, limits};
use berth_logs::{Bound, Found, InputEvent, LogError, LogStore, Query};
use proptest::prelude::*;
use std::collections::BTreeMap;

const NOW: i64 = 1_700_000_000_000;

fn ev(ts: i64, msg: &str) -> InputEvent {
    InputEvent {
        timestamp: ts,
        message: msg.to_string(),
    }
}

fn query(bound: Bound, limit: usize) -> Query<'static> {
    Query {
        start: i64::MIN,
        end: i64::MAX,
        bound,
        limit,
        max_bytes: usize::MAX,
        pattern: None,
        now: NOW,
    }
}

/// Every event of a stream, by paging forward from the head `page` at a time.
fn page_forward(s: &LogStore, page: usize) -> Vec<Found> {
    let mut all = Vec::new();
    let mut bound = Bound::Head;
    for _ in 0..100_000 {
        let got = s.get("g", "s", &query(bound, page)).expect("get");
        let Some(last) = got.last() else { break };
        bound = Bound::After(last.key);
        all.extend(got);
    }
    all
}

/// The same, backward from the tail.
fn page_backward(s: &LogStore, page: usize) -> Vec<Found> {
    let mut all = Vec::new();
    let mut bound = Bound::Tail;
    for _ in 0..100_000 {
        let got = s.get("g", "s", &query(bound, page)).expect("get");
        let Some(first) = got.first() else { break };
        bound = Bound::Before(first.key);
        let mut got = got;
        got.extend(all);
        all = got;
    }
    all
}

fn messages(found: &[Found]) -> Vec<String> {
    found.iter().map(|f| f.event.message.clone()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Batches (each in order, but older or newer than the last) land in small segments; reading
    /// pages of any size either way, before and after reopening, gives each event exactly once,
    /// in (timestamp, arrival) order.
    #[test]
    fn every_acknowledged_event_reads_back_once_in_order(
        batches in prop::collection::vec(
            (0i64..5_000, prop::collection::vec(0i64..50, 1..40)), 1..12),
        page in 1usize..50,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut expected: Vec<(i64, u64, String)> = Vec::new();
        {
            let s = LogStore::open_with(dir.path(), 512).expect("open");
            s.create_group("g", NOW, BTreeMap::new()).expect("group");
            s.create_stream("g", "s", NOW).expect("stream");
            let mut seq = 0u64;
            for (b, (base, steps)) in batches.iter().enumerate() {
                let mut ts = NOW - 1_000_000 + base;
                let mut events = Vec::new();
                for (i, step) in steps.iter().enumerate() {
                    ts += step;
                    let msg = format!("b{b} e{i}");
                    events.push(ev(ts, &msg));
                    expected.push((ts, seq, msg));
                    seq += 1;
                }
                s.put("g", "s", &events, None, NOW).expect("put");
            }
            expected.sort();
            let want: Vec<String> = expected.iter().map(|e| e.2.clone()).collect();
            prop_assert_eq!(messages(&page_forward(&s, page)), want.clone(), "forward pages");
            prop_assert_eq!(messages(&page_backward(&s, page)), want, "backward pages");
        }
        let s = LogStore::open_with(dir.path(), 512).expect("reopen");
        let want: Vec<String> = expected.iter().map(|e| e.2.clone()).collect();
        prop_assert_eq!(messages(&page_forward(&s, page)), want, "forward pages after reopening");
    }
}

#[test]
fn a_torn_tail_is_cut_and_writing_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = LogStore::open(dir.path()).expect("open");
        s.create_group("g", NOW, BTreeMap::new()).expect("group");
        s.create_stream("g", "s", NOW).expect("stream");
        s.put("g", "s", &[ev(NOW, "one"), ev(NOW + 1, "two")], None, NOW)
            .expect("put");
    }
    // A crash in the middle of the next append leaves half a record behind.
    let seg = walk(dir.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment file exists");
    let mut bytes = std::fs::read(&seg).expect("read segment");
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&seg, &bytes).expect("tear the segment");

    let s = LogStore::open(dir.path()).expect("reopen after the tear");
    assert_eq!(
        messages(&page_forward(&s, 10)),
        ["one", "two"],
        "the acknowledged events survive and the torn record is gone"
    );
    s.put("g", "s", &[ev(NOW + 2, "three")], None, NOW)
        .expect("put after reopening");
    assert_eq!(messages(&page_forward(&s, 10)), ["one", "two", "three"]);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn retention_drops_whole_segments_and_hides_expired_events_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = LogStore::open_with(dir.path(), 256).expect("open");
    s.create_group("g", NOW, BTreeMap::new()).expect("group");
    s.create_stream("g", "s", NOW).expect("stream");
    for i in 0..20 {
        s.put("g", "s", &[ev(NOW + i, &format!("event {i}"))], None, NOW)
            .expect("put");
    }
    s.set_retention("g", Some(1)).expect("retention");
    let later = NOW + 86_400_000 + 10;
    let q = Query {
        now: later,
        ..query(Bound::Head, 100)
    };
    let visible = s.get("g", "s", &q).expect("get");
    assert_eq!(
        messages(&visible),
        (10..20).map(|i| format!("event {i}")).collect::<Vec<_>>(),
        "events older than a day are not read even before their segments go"
    );
    let files_before = walk(dir.path()).len();
    let dropped = s.expire(later).expect("expire");
    assert!(dropped > 0, "whole segments past retention are dropped");
    assert!(
        walk(dir.path()).len() < files_before,
        "their files are gone"
    );
    let after = s.get("g", "s", &q).expect("get");
    assert!(
        after.iter().all(|f| f.event.timestamp >= NOW + 10),
        "nothing past retention comes back after expiry"
    );
    let info = s.stream_info("g", "s").expect("info");
    assert!(info.first_event.is_some_and(|t| t >= NOW), "{info:?}");
    assert!(matches!(
        s.set_retention("g", Some(2)),
        Err(LogError::Invalid(m)) if m.contains("retentionInDays")
    ));
}

#[test]
fn a_resent_batch_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = LogStore::open(dir.path()).expect("open");
    s.create_group("g", NOW, BTreeMap::new()).expect("group");
    s.create_stream("g", "s", NOW).expect("stream");
    let batch = [ev(NOW, "a"), ev(NOW, "b"), ev(NOW, "c")];
    s.put("g", "s", &batch, Some(&[1, 2, 3]), NOW).expect("put");
    // The answer was lost; the producer sends again, with one more line.
    let again = [ev(NOW, "b"), ev(NOW, "c"), ev(NOW, "d")];
    s.put("g", "s", &again, Some(&[2, 3, 4]), NOW)
        .expect("resend");
    assert_eq!(messages(&page_forward(&s, 10)), ["a", "b", "c", "d"]);
    assert_eq!(s.stream_info("g", "s").expect("info").cursor, 4);
    let s = LogStore::open(dir.path()).expect("reopen");
    assert_eq!(
        s.stream_info("g", "s").expect("info").cursor,
        4,
        "the producer's cursor survives a restart"
    );
}

#[test]
fn batch_rules_are_logs_own() {
    let e = |ts| ev(ts, "x");
    let err = |events: &[InputEvent]| match check_batch(events, NOW, None) {
        Err(LogError::Invalid(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(err(&[e(NOW), e(NOW - 1)]).contains("must be in chronological order"));
    assert!(err(&[e(NOW - 25 * 3600 * 1000), e(NOW)]).contains("cannot span more than 24 hours"));
    assert!(err(&[]).contains("greater than or equal to 1"));
    assert!(err(&vec![e(NOW); limits::MAX_EVENTS + 1]).contains("less than or equal to 10000"));
    let big = "y".repeat(200_000);
    let many: Vec<InputEvent> = (0..6).map(|_| ev(NOW, &big)).collect();
    assert!(err(&many).starts_with("Upload too large"));
    assert!(err(&[ev(NOW, "")]).contains("logEvents.1.member.message"));

    let old = NOW - 15 * 86_400_000;
    let (range, rejected) = check_batch(&[e(old), e(old + 1)], NOW, None).expect("accepted");
    assert!(range.is_empty(), "both events are too old: {range:?}");
    assert_eq!(rejected.too_old_end, Some(1));
    let new = NOW + 3 * 3600 * 1000;
    let (range, rejected) = check_batch(&[e(NOW - 1000), e(new)], NOW, None).expect("accepted");
    assert_eq!(range, 0..1, "only the event inside the window is stored");
    assert_eq!(rejected.too_new_start, Some(1));
    let (range, rejected) = check_batch(
        &[e(NOW - 25 * 3600 * 1000), e(NOW - 12 * 3600 * 1000)],
        NOW,
        Some(1),
    )
    .expect("accepted");
    assert_eq!((range, rejected.expired_end), (1..2, Some(0)));
}

#[test]
fn names_outside_logs_patterns_are_refused_and_nothing_is_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = LogStore::open(dir.path()).expect("open");
    assert!(matches!(
        s.create_group("a b", NOW, BTreeMap::new()),
        Err(LogError::Invalid(_))
    ));
    assert!(matches!(
        s.create_group("", NOW, BTreeMap::new()),
        Err(LogError::Invalid(_))
    ));
    assert!(
        s.groups(None, None, None, 50).is_empty(),
        "no group was made"
    );
    s.create_group("/ecs/web", NOW, BTreeMap::new())
        .expect("group");
    assert!(matches!(
        s.create_group("/ecs/web", NOW, BTreeMap::new()),
        Err(LogError::GroupExists)
    ));
    assert!(matches!(
        s.create_stream("/ecs/web", "a:b", NOW),
        Err(LogError::Invalid(_))
    ));
    assert!(matches!(
        s.create_stream("/ecs/nope", "a", NOW),
        Err(LogError::GroupNotFound)
    ));
    s.create_stream("/ecs/web", "ecs/web/0123", NOW)
        .expect("stream");
    assert!(matches!(
        s.put("/ecs/web", "other", &[ev(NOW, "x")], None, NOW),
        Err(LogError::StreamNotFound)
    ));
    s.delete_group("/ecs/web").expect("delete");
    assert!(s.groups(None, None, None, 50).is_empty());
    let s = LogStore::open(dir.path()).expect("reopen");
    assert!(
        s.groups(None, None, None, 50).is_empty(),
        "the deletion was durable"
    );
}

#[test]
fn filter_reads_across_streams_in_time_order_with_a_pattern() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = LogStore::open_with(dir.path(), 300).expect("open");
    s.create_group("g", NOW, BTreeMap::new()).expect("group");
    for name in ["a", "b"] {
        s.create_stream("g", name, NOW).expect("stream");
    }
    for i in 0..30 {
        let stream = if i % 2 == 0 { "a" } else { "b" };
        let level = if i % 5 == 0 { "ERROR" } else { "INFO" };
        s.put(
            "g",
            stream,
            &[ev(NOW + i, &format!("{level} line {i}"))],
            None,
            NOW,
        )
        .expect("put");
    }
    let pattern = Pattern::parse("ERROR").expect("pattern");
    let q = Query {
        pattern: Some(&pattern),
        ..query(Bound::Head, 2)
    };
    let first = s.filter("g", None, None, &q).expect("filter");
    assert_eq!(messages(&first), ["ERROR line 0", "ERROR line 5"]);
    assert_eq!(first[1].stream_name, "b");
    let rest = s
        .filter(
            "g",
            None,
            None,
            &Query {
                bound: Bound::After(first[1].key),
                limit: 100,
                ..q.clone()
            },
        )
        .expect("filter");
    assert_eq!(
        messages(&rest),
        [
            "ERROR line 10",
            "ERROR line 15",
            "ERROR line 20",
            "ERROR line 25"
        ]
    );
    let only_a = s
        .filter(
            "g",
            Some(&["a".to_string()]),
            None,
            &Query { limit: 100, ..q },
        )
        .expect("filter");
    assert!(only_a.iter().all(|f| f.stream_name == "a"));
    assert_eq!(only_a.len(), 3);
}
