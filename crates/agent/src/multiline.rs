//! How a container's output lines become CloudWatch-style log events, the way Docker's awslogs
//! log driver does it (moby `daemon/logger/awslogs/cloudwatchlogs.go`).
//!
//! Without `awslogs-datetime-format` or `awslogs-multiline-pattern`, every line is its own event.
//! With one of them, lines are grouped: a line the start pattern matches begins a new event, and
//! every other line is appended to the current one. The rules, all as in moby:
//!
//! - In grouped mode each line is appended with its `\n`, so a grouped event's message ends in a
//!   newline (moby's tests expect `"line\nline\n"`); an ungrouped event is the bare line.
//! - The start pattern is searched anywhere in the line (Go's `Regexp.Match`), not anchored; a
//!   `awslogs-multiline-pattern` or datetime format that should only match at the start of the
//!   line has to say `^` itself.
//! - An event is closed when its next line would take it past [`MAX_EVENT_BYTES`]; a line longer
//!   than that is cut into pieces of at most that size (Docker's copier does it, because the
//!   driver announces that size as its buffer), each piece treated as a line of its own, and
//!   only the last piece gets the `\n`. Cuts fall on character boundaries.
//! - An event's timestamp is the time of its first line. A pending event is flushed once it is
//!   [`FLUSH_AFTER_MS`] old by that timestamp (or when the clock went backwards), even if more
//!   lines are still arriving, and when the stream ends.
//! - Empty lines produce no event when ungrouped (moby's `processEvent` loops while bytes are
//!   left, so an empty message sends nothing); when grouped they are kept, as a `\n`, in the
//!   event they fall into.

use regex::Regex;

/// The largest message of one event, in bytes: moby's `maximumBytesPerEvent = 262144 -
/// perEventBytes`, CloudWatch's 256 KiB event limit less the 26 bytes PutLogEvents counts per
/// event.
pub const MAX_EVENT_BYTES: usize = 262_144 - 26;

/// How long a grouped event may wait for more lines: moby's `defaultForceFlushInterval`
/// (5 s), which `awslogs-force-flush-interval-seconds` overrides.
pub const FLUSH_AFTER_MS: i64 = 5_000;

/// Why a container's multi-line options cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MultilineError {
    /// Both options were given (Docker's `ValidateLogOpt` refuses this, even when one of them
    /// is empty).
    #[error(
        "you cannot configure log opt 'awslogs-datetime-format' and 'awslogs-multiline-pattern' at the same time"
    )]
    BothOptions,
    /// `awslogs-datetime-format` converted to a regular expression that does not compile.
    #[error("awslogs could not parse datetime format {format:?} (as the regular expression {pattern:?}): {error}")]
    DatetimeFormat {
        format: String,
        pattern: String,
        #[source]
        error: regex::Error,
    },
    /// `awslogs-multiline-pattern` is not a valid regular expression.
    #[error("awslogs could not parse multiline pattern {pattern:?}: {error}")]
    MultilinePattern {
        pattern: String,
        #[source]
        error: regex::Error,
    },
}

/// How lines become events, from a container's awslogs options: the pattern that starts an
/// event.
#[derive(Debug, Clone)]
pub struct Grouping {
    starts: Regex,
}

impl Grouping {
    /// From `awslogs-datetime-format` and `awslogs-multiline-pattern` (None when absent).
    /// Both present is an error; an empty value alone means no grouping, as in Docker.
    pub fn from_options(
        datetime_format: Option<&str>,
        multiline_pattern: Option<&str>,
    ) -> Result<Option<Grouping>, MultilineError> {
        match (datetime_format, multiline_pattern) {
            (Some(_), Some(_)) => Err(MultilineError::BothOptions),
            (Some(format), None) if !format.is_empty() => Ok(Some(Grouping {
                starts: Grouping::datetime_regex(format)?,
            })),
            (None, Some(pattern)) if !pattern.is_empty() => {
                Grouping::multiline_pattern(pattern).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Docker's strftime → regex conversion ([`datetime_pattern`]), compiled. Like Docker's,
    /// the result is not anchored: it matches a timestamp anywhere in a line unless the format
    /// starts with `^`.
    pub fn datetime_regex(format: &str) -> Result<Regex, MultilineError> {
        let pattern = datetime_pattern(format);
        Regex::new(&pattern).map_err(|error| MultilineError::DatetimeFormat {
            format: format.to_owned(),
            pattern,
            error,
        })
    }

    /// From an `awslogs-multiline-pattern` regular expression.
    pub fn multiline_pattern(pattern: &str) -> Result<Grouping, MultilineError> {
        Regex::new(pattern)
            .map(|starts| Grouping { starts })
            .map_err(|error| MultilineError::MultilinePattern {
                pattern: pattern.to_owned(),
                error,
            })
    }

    /// The pattern that starts an event.
    pub fn regex(&self) -> &Regex {
        &self.starts
    }

    /// Whether `line` begins a new event.
    pub fn starts_event(&self, line: &str) -> bool {
        self.starts.is_match(line)
    }
}

/// The regular expression text Docker makes of an `awslogs-datetime-format`: every `%`
/// followed by a character (moby matches `%.`, so not `%` and a newline) is replaced by its
/// entry in moby's `strftimeToRegex` table, and by nothing when the table has no entry (so
/// `%%` and `%c` vanish). Everything else is regular-expression text as written, which is
/// why Docker's documentation writes `\[%b %d, %Y %H:%M:%S\]` for a bracketed timestamp.
pub fn datetime_pattern(format: &str) -> String {
    let mut out = String::with_capacity(format.len() * 4);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut ahead = chars.clone();
        match ahead.next() {
            Some(spec) if spec != '\n' => {
                chars = ahead;
                if let Some(regex) = strftime_regex(spec) {
                    out.push_str(regex);
                }
            }
            _ => out.push('%'),
        }
    }
    out
}

/// moby's `strftimeToRegex`, entry for entry. Go's `\d` is ASCII-only, so it is written
/// `[0-9]` here (this crate's `\d` would take any Unicode digit); the commas inside some
/// classes (`[1,2]`, `[A,P]`) are moby's and kept so that the same lines match.
fn strftime_regex(spec: char) -> Option<&'static str> {
    Some(match spec {
        // weekday, short and full; weekday as 0 (Sunday) to 6
        'a' => "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)",
        'A' => "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)",
        'w' => "[0-6]",
        // day of the month, zero-padded
        'd' => "(?:0[1-9]|[1,2][0-9]|3[0,1])",
        // month, short, full and zero-padded
        'b' => "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)",
        'B' => "(?:January|February|March|April|May|June|July|August|September|October|November|December)",
        'm' => "(?:0[1-9]|1[0-2])",
        // year with and without the century
        'Y' => "[0-9]{4}",
        'y' => "[0-9]{2}",
        // hour (24 and 12), AM or PM, minute, second
        'H' => "(?:[0,1][0-9]|2[0-3])",
        'I' => "(?:0[0-9]|1[0-2])",
        'p' => "[A,P]M",
        'M' => "[0-5][0-9]",
        'S' => "[0-5][0-9]",
        // microseconds, zero-padded
        'f' => "[0-9]{6}",
        // UTC offset and time zone name
        'z' => "[+-][0-9]{4}",
        'Z' => "[A-Z]{1,4}T",
        // day of the year, zero-padded
        'j' => "(?:0[0-9][1-9]|[1,2][0-9][0-9]|3[0-5][0-9]|36[0-6])",
        // milliseconds, with their dot
        'L' => "\\.[0-9]{3}",
        _ => return None,
    })
}

/// One log event ready to ship: the timestamp (ms since epoch) of its first line and its text.
/// A grouped event's text ends with the `\n` of its last line, as Docker sends it; an ungrouped
/// event's text is the line alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub timestamp_ms: i64,
    pub message: String,
}

/// The grouped event being built.
#[derive(Debug)]
struct Pending {
    timestamp_ms: i64,
    text: String,
}

/// Accumulates lines into events.
#[derive(Debug)]
pub struct Assembler {
    grouping: Option<Grouping>,
    flush_after_ms: i64,
    pending: Option<Pending>,
}

impl Assembler {
    pub fn new(grouping: Option<Grouping>) -> Assembler {
        Assembler {
            grouping,
            flush_after_ms: FLUSH_AFTER_MS,
            pending: None,
        }
    }

    /// With another flush period (`awslogs-force-flush-interval-seconds` × 1000); a period
    /// that is not positive keeps [`FLUSH_AFTER_MS`], as moby's `collectBatch` does.
    pub fn with_flush_after_ms(mut self, flush_after_ms: i64) -> Assembler {
        self.flush_after_ms = if flush_after_ms > 0 {
            flush_after_ms
        } else {
            FLUSH_AFTER_MS
        };
        self
    }

    pub fn flush_after_ms(&self) -> i64 {
        self.flush_after_ms
    }

    /// Whether lines are grouped at all.
    pub fn is_grouping(&self) -> bool {
        self.grouping.is_some()
    }

    /// Whether a grouped event is waiting for more lines.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// When [`flush`](Assembler::flush) will release the pending event, if there is one.
    pub fn next_flush_at(&self) -> Option<i64> {
        self.pending
            .as_ref()
            .map(|p| p.timestamp_ms.saturating_add(self.flush_after_ms))
    }

    /// Feeds one line (without its trailing newline) read at `timestamp_ms`; returns events
    /// completed by it.
    pub fn push(&mut self, line: &str, timestamp_ms: i64) -> Vec<Event> {
        let mut out = Vec::new();
        if self.grouping.is_none() {
            emit(&mut out, line, timestamp_ms);
            return out;
        }
        // Docker's copier hands the driver a long line in pieces of at most the event size,
        // and the driver treats each piece as a line.
        let mut rest = line;
        loop {
            let (piece, tail) = rest.split_at(split_point(rest, MAX_EVENT_BYTES));
            let line_end = tail.is_empty();
            self.push_piece(piece, line_end, timestamp_ms, &mut out);
            if line_end {
                break;
            }
            rest = tail;
        }
        out
    }

    /// One piece of a line in grouped mode: moby's `collectBatch` for a multi-line stream.
    fn push_piece(&mut self, piece: &str, line_end: bool, timestamp_ms: i64, out: &mut Vec<Event>) {
        let starts = self
            .grouping
            .as_ref()
            .is_some_and(|g| g.starts_event(piece));
        let buffered = self.pending.as_ref().map_or(0, |p| p.text.len());
        if starts || buffered + piece.len() > MAX_EVENT_BYTES {
            if let Some(done) = self.pending.take() {
                emit_owned(out, done.text, done.timestamp_ms);
            }
        }
        let pending = self.pending.get_or_insert_with(|| Pending {
            timestamp_ms,
            text: String::new(),
        });
        pending.text.push_str(piece);
        // moby appends the newline only to a line shorter than the event limit.
        if line_end && piece.len() < MAX_EVENT_BYTES {
            pending.text.push('\n');
        }
    }

    /// The pending event if its first line arrived at or before `now_ms - flush_after_ms`, or
    /// after `now_ms` (moby flushes on a clock that went backwards too): Docker's forced
    /// flush, which it checks on a ticker of the same period. Everything pending when `force`
    /// (the stream ended).
    pub fn flush(&mut self, now_ms: i64, force: bool) -> Vec<Event> {
        let flush_after_ms = self.flush_after_ms;
        let due = self.pending.take_if(|p| {
            let age = now_ms.saturating_sub(p.timestamp_ms);
            force || age >= flush_after_ms || age < 0
        });
        let mut out = Vec::new();
        if let Some(done) = due {
            emit_owned(&mut out, done.text, done.timestamp_ms);
        }
        out
    }
}

/// moby's `processEvent`: `text` as events of at most [`MAX_EVENT_BYTES`], nothing when empty.
fn emit(out: &mut Vec<Event>, text: &str, timestamp_ms: i64) {
    let mut rest = text;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(split_point(rest, MAX_EVENT_BYTES));
        out.push(Event {
            timestamp_ms,
            message: chunk.to_owned(),
        });
        rest = tail;
    }
}

/// [`emit`] without copying a text that fits one event.
fn emit_owned(out: &mut Vec<Event>, text: String, timestamp_ms: i64) {
    if text.len() > MAX_EVENT_BYTES {
        emit(out, &text, timestamp_ms);
    } else if !text.is_empty() {
        out.push(Event {
            timestamp_ms,
            message: text,
        });
    }
}

/// Where to cut `s` so that the head has at most `max` bytes and ends on a character boundary
/// (moby's `findValidSplit`); always past the first character of a non-empty `s`.
fn split_point(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    if at == 0 {
        // A single character longer than `max`: it goes whole rather than never.
        at = s.chars().next().map_or(s.len(), char::len_utf8);
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datetime(format: &str) -> Option<Grouping> {
        match Grouping::from_options(Some(format), None) {
            Ok(Some(grouping)) => Some(grouping),
            other => panic!("datetime format {format:?} should give a grouping, got {other:?}"),
        }
    }

    fn pattern(regex: &str) -> Option<Grouping> {
        match Grouping::from_options(None, Some(regex)) {
            Ok(Some(grouping)) => Some(grouping),
            other => panic!("multiline pattern {regex:?} should give a grouping, got {other:?}"),
        }
    }

    fn event(timestamp_ms: i64, message: &str) -> Event {
        Event {
            timestamp_ms,
            message: message.to_owned(),
        }
    }

    #[test]
    fn datetime_pattern_uses_dockers_table() {
        assert_eq!(
            datetime_pattern("%Y-%m-%d %H:%M:%S"),
            "[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[1,2][0-9]|3[0,1]) (?:[0,1][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]",
            "the conversion of %Y-%m-%d %H:%M:%S"
        );
        assert_eq!(
            datetime_pattern("%a %A %w %b %B %y %I %p %f %z %Z %j %L"),
            "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) \
             (?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday) [0-6] \
             (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \
             (?:January|February|March|April|May|June|July|August|September|October|November|December) \
             [0-9]{2} (?:0[0-9]|1[0-2]) [A,P]M [0-9]{6} [+-][0-9]{4} [A-Z]{1,4}T \
             (?:0[0-9][1-9]|[1,2][0-9][0-9]|3[0-5][0-9]|36[0-6]) \\.[0-9]{3}",
            "the conversion of the rest of the table"
        );
    }

    #[test]
    fn datetime_pattern_drops_unknown_sequences_and_keeps_a_lone_percent() {
        assert_eq!(
            datetime_pattern("%Q%Y%%"),
            "[0-9]{4}",
            "unknown %Q and %% should vanish"
        );
        assert_eq!(datetime_pattern("100%"), "100%", "a trailing % should stay");
        assert_eq!(
            datetime_pattern("%\n"),
            "%\n",
            "% before a newline should stay"
        );
        assert_eq!(datetime_pattern("%c"), "", "%c is not in Docker's table");
    }

    #[test]
    fn datetime_formats_match_their_timestamps() {
        let cases = [
            (
                "%Y-%m-%d %H:%M:%S",
                "2017-01-01 01:01:44 This is a log entry",
                "\tat com.example.Foo.bar(Foo.java:42)",
            ),
            (
                r"\[%b %d, %Y %H:%M:%S\]",
                "[May 01, 2017 19:00:01] A message was logged",
                "Some random message",
            ),
            (
                "%Y-%m-%dT%H:%M:%S%z",
                "2024-03-05T10:11:12+0100 started",
                "2024-03-05 10:11:12 started",
            ),
            (
                "%d/%m/%y %a %H:%M:%S%L %Z",
                "31/12/10 Mon 08:42:44.345 NZDT",
                "31/12/10 Mon 08:42:44 NZDT",
            ),
            (
                "%Y-%m-%d %A %I:%M:%S.%f%p%z",
                "2007-12-04 Monday 08:42:44.123456AM+1200",
                "2007-12-04 Mon 08:42:44.123456AM+1200",
            ),
            (
                "Day of the week: %w, Day of the year: %j",
                "Day of the week: 4, Day of the year: 091",
                "Day of the week: 7, Day of the year: 091",
            ),
            ("%H:%M:%S", "23:59:59 late", "24:00:00 never"),
        ];
        for (format, matching, other) in cases {
            let regex = match Grouping::datetime_regex(format) {
                Ok(regex) => regex,
                Err(err) => panic!("datetime format {format:?} should compile: {err}"),
            };
            assert!(
                regex.is_match(matching),
                "{format:?} should match {matching:?} (regex {regex})"
            );
            assert!(
                !regex.is_match(other),
                "{format:?} should not match {other:?} (regex {regex})"
            );
        }
    }

    #[test]
    fn datetime_regex_is_not_anchored_like_dockers() {
        let regex = Grouping::datetime_regex("%Y-%m-%d").expect("%Y-%m-%d compiles");
        assert!(
            regex.is_match("INFO 2017-01-01 started"),
            "Docker's Regexp.Match finds the timestamp anywhere in the line"
        );
        let anchored = Grouping::datetime_regex("^%Y-%m-%d").expect("^%Y-%m-%d compiles");
        assert!(
            !anchored.is_match("INFO 2017-01-01 started"),
            "a format starting with ^ should only match at the start"
        );
        assert!(
            anchored.is_match("2017-01-01 started"),
            "the anchored format should match a leading date"
        );
    }

    #[test]
    fn options_both_absent_or_empty_mean_no_grouping() {
        assert!(
            matches!(Grouping::from_options(None, None), Ok(None)),
            "no options should mean no grouping"
        );
        assert!(
            matches!(Grouping::from_options(Some(""), None), Ok(None)),
            "an empty datetime format should mean no grouping"
        );
        assert!(
            matches!(Grouping::from_options(None, Some("")), Ok(None)),
            "an empty multiline pattern should mean no grouping"
        );
    }

    #[test]
    fn both_options_are_refused_with_dockers_message() {
        match Grouping::from_options(Some("%Y-%m-%d"), Some("^xxxx")) {
            Err(err @ MultilineError::BothOptions) => assert_eq!(
                err.to_string(),
                "you cannot configure log opt 'awslogs-datetime-format' and 'awslogs-multiline-pattern' at the same time",
                "the message for both options"
            ),
            other => panic!("both options should be refused, got {other:?}"),
        }
        assert!(
            matches!(
                Grouping::from_options(Some(""), Some("")),
                Err(MultilineError::BothOptions)
            ),
            "both options present, even empty, should be refused as Docker does"
        );
    }

    #[test]
    fn bad_regular_expressions_are_errors() {
        match Grouping::from_options(None, Some("foo(bar")) {
            Err(MultilineError::MultilinePattern { pattern, .. }) => {
                assert_eq!(pattern, "foo(bar", "the error should name the pattern")
            }
            other => {
                panic!("an unclosed group in the multiline pattern should fail, got {other:?}")
            }
        }
        match Grouping::from_options(Some("%Y("), None) {
            Err(MultilineError::DatetimeFormat {
                format, pattern, ..
            }) => {
                assert_eq!(format, "%Y(", "the error should name the format");
                assert_eq!(
                    pattern, "[0-9]{4}(",
                    "the error should show the converted regex"
                );
            }
            other => {
                panic!("a datetime format converting to a bad regex should fail, got {other:?}")
            }
        }
    }

    #[test]
    fn stack_trace_is_grouped_under_its_timestamp_line() {
        let mut a = Assembler::new(datetime("%Y-%m-%d %H:%M:%S"));
        assert!(a.is_grouping(), "a datetime format should group");
        assert!(
            a.push("2024-01-01 10:00:00 ERROR boom", 1_000).is_empty(),
            "the first line should wait"
        );
        assert!(
            a.push("java.lang.IllegalStateException: boom", 1_001)
                .is_empty(),
            "the exception line should be appended"
        );
        assert!(
            a.push("\tat com.example.Main.main(Main.java:10)", 1_002)
                .is_empty(),
            "the frame should be appended"
        );
        assert_eq!(
            a.push("2024-01-01 10:00:01 INFO next", 1_003),
            vec![event(
                1_000,
                "2024-01-01 10:00:00 ERROR boom\njava.lang.IllegalStateException: boom\n\tat com.example.Main.main(Main.java:10)\n"
            )],
            "the next timestamp should close the stack trace as one event stamped with its first line"
        );
        assert_eq!(
            a.flush(1_004, true),
            vec![event(1_003, "2024-01-01 10:00:01 INFO next\n")],
            "the forced flush should release the last event"
        );
        assert!(
            !a.has_pending(),
            "nothing should be pending after a forced flush"
        );
    }

    #[test]
    fn multiline_pattern_starts_events_as_in_mobys_test() {
        let mut a = Assembler::new(pattern("xxxx"));
        assert!(a.push("hello", 10).is_empty(), "the first line should wait");
        assert!(
            a.push("hello", 11).is_empty(),
            "a non-matching line should be appended"
        );
        assert_eq!(
            a.push("xxxx hello", 12),
            vec![event(10, "hello\nhello\n")],
            "a matching line should close the lines before it"
        );
        assert_eq!(
            a.flush(13, true),
            vec![event(12, "xxxx hello\n")],
            "the matching line should start the next event"
        );
    }

    #[test]
    fn empty_lines_are_skipped_alone_and_kept_inside_events() {
        let mut plain = Assembler::new(None);
        assert!(
            plain.push("", 1).is_empty(),
            "an empty line should be no event without grouping"
        );
        assert!(
            !plain.has_pending(),
            "nothing should be pending without grouping"
        );
        assert!(
            plain.flush(10_000, true).is_empty(),
            "nothing should be flushed without grouping"
        );

        let mut a = Assembler::new(pattern("^start"));
        assert!(
            a.push("start a", 1).is_empty(),
            "the first line should wait"
        );
        assert!(a.push("", 2).is_empty(), "an empty line should be appended");
        assert!(
            a.push("b", 3).is_empty(),
            "the next line should be appended"
        );
        assert_eq!(
            a.flush(4, true),
            vec![event(1, "start a\n\nb\n")],
            "the empty line should stay in the event as a newline"
        );
    }

    #[test]
    fn ungrouped_lines_are_events_of_their_own() {
        let mut a = Assembler::new(None);
        assert!(!a.is_grouping(), "no grouping given");
        assert_eq!(
            a.push("one", 5),
            vec![event(5, "one")],
            "a line should be its own event, without newline"
        );
        assert_eq!(a.push("two", 6), vec![event(6, "two")], "the next line too");
    }

    #[test]
    fn pending_event_is_flushed_when_its_first_line_is_old_enough() {
        let mut a = Assembler::new(pattern("^start"));
        assert!(
            a.push("start", 1_000).is_empty(),
            "the first line should wait"
        );
        assert!(
            a.push("more", 4_000).is_empty(),
            "the second line should be appended"
        );
        assert_eq!(
            a.next_flush_at(),
            Some(6_000),
            "the flush should be due 5 s after the first line"
        );
        assert!(
            a.flush(5_999, false).is_empty(),
            "4.999 s after the first line is too early"
        );
        assert_eq!(
            a.flush(6_000, false),
            vec![event(1_000, "start\nmore\n")],
            "5 s after the first line the event should be released"
        );
        assert_eq!(
            a.next_flush_at(),
            None,
            "nothing should be pending after the flush"
        );

        assert!(
            a.push("late", 7_000).is_empty(),
            "a continuation after a flush starts a new event"
        );
        assert!(
            a.flush(11_999, false).is_empty(),
            "the new event is timed from its own first line"
        );
        assert_eq!(
            a.flush(12_000, false),
            vec![event(7_000, "late\n")],
            "the continuation should be flushed with its own timestamp"
        );

        assert!(
            a.push("start again", 20_000).is_empty(),
            "a new event should wait"
        );
        assert_eq!(
            a.flush(19_000, false),
            vec![event(20_000, "start again\n")],
            "a clock that went backwards should flush, as moby does"
        );
    }

    #[test]
    fn flush_period_can_be_changed() {
        let mut a = Assembler::new(pattern("^start")).with_flush_after_ms(15_000);
        assert_eq!(a.flush_after_ms(), 15_000, "the flush period should be set");
        assert!(a.push("start", 0).is_empty(), "the first line should wait");
        assert!(
            a.flush(14_999, false).is_empty(),
            "the longer period should hold the event"
        );
        assert_eq!(
            a.flush(15_000, false).len(),
            1,
            "the event should go after the longer period"
        );
        let b = Assembler::new(None).with_flush_after_ms(0);
        assert_eq!(
            b.flush_after_ms(),
            FLUSH_AFTER_MS,
            "a period that is not positive should keep the default"
        );
    }

    #[test]
    fn forced_flush_releases_everything_pending() {
        let mut a = Assembler::new(pattern("^start"));
        assert!(
            a.flush(0, true).is_empty(),
            "nothing pending, nothing to flush"
        );
        assert!(
            a.push("start", 100).is_empty(),
            "the first line should wait"
        );
        assert!(
            a.push("tail", 101).is_empty(),
            "the second line should be appended"
        );
        assert!(
            a.flush(102, false).is_empty(),
            "the event is not old enough yet"
        );
        assert_eq!(
            a.flush(102, true),
            vec![event(100, "start\ntail\n")],
            "force should release the young event"
        );
        assert!(
            a.flush(200_000, true).is_empty(),
            "the event should have been released only once"
        );
    }

    #[test]
    fn oversized_ungrouped_line_is_split() {
        assert_eq!(MAX_EVENT_BYTES, 262_118, "moby's maximumBytesPerEvent");
        let mut a = Assembler::new(None);
        let line = "a".repeat(MAX_EVENT_BYTES + 10);
        let events = a.push(&line, 7);
        assert_eq!(
            events.len(),
            2,
            "a line 10 bytes over the limit should be two events"
        );
        assert_eq!(
            events[0].message.len(),
            MAX_EVENT_BYTES,
            "the first piece should be as large as allowed"
        );
        assert_eq!(
            events[1].message,
            "a".repeat(10),
            "the second piece should be the rest"
        );
        assert!(
            events.iter().all(|e| e.timestamp_ms == 7),
            "every piece should keep the line's timestamp"
        );
    }

    #[test]
    fn split_falls_on_a_character_boundary() {
        // 'a' then two-byte characters: the byte at MAX_EVENT_BYTES (even) is inside one.
        let line = format!("a{}", "é".repeat(MAX_EVENT_BYTES / 2));
        assert_eq!(
            line.len(),
            MAX_EVENT_BYTES + 1,
            "the test line should be one byte too long"
        );
        let events = Assembler::new(None).push(&line, 1);
        assert_eq!(events.len(), 2, "the line should be split in two");
        assert_eq!(
            events[0].message.len(),
            MAX_EVENT_BYTES - 1,
            "the cut should back off to the boundary"
        );
        assert_eq!(
            events[1].message, "é",
            "the second piece should be the whole last character"
        );
        assert_eq!(
            format!("{}{}", events[0].message, events[1].message),
            line,
            "the pieces should rebuild the line"
        );
    }

    #[test]
    fn grouped_event_at_the_limit_is_closed_as_in_mobys_test() {
        let mut a = Assembler::new(pattern("xxxx"));
        let long = "A".repeat(MAX_EVENT_BYTES);
        let short = "B".repeat(100);
        assert!(
            a.push(&long, 1).is_empty(),
            "a line of exactly the limit should wait"
        );
        assert_eq!(
            a.push(&short, 2),
            vec![event(1, &long)],
            "the next line should close the full event, which gets no newline"
        );
        assert_eq!(
            a.flush(3, true),
            vec![event(2, &format!("{short}\n"))],
            "the short line should be an event of its own"
        );
    }

    #[test]
    fn grouped_event_is_closed_before_it_would_exceed_the_limit() {
        let mut a = Assembler::new(pattern("^start"));
        let chunk = "c".repeat(100_000);
        assert!(a.push("start", 1).is_empty(), "the first line should wait");
        assert!(a.push(&chunk, 2).is_empty(), "100 kB should fit");
        assert!(a.push(&chunk, 3).is_empty(), "200 kB should fit");
        let events = a.push(&chunk, 4);
        assert_eq!(
            events.len(),
            1,
            "300 kB should not fit: the event so far should be closed"
        );
        assert_eq!(
            events[0].timestamp_ms, 1,
            "the closed event should keep its first line's time"
        );
        assert_eq!(
            events[0].message.len(),
            6 + 2 * 100_001,
            "the closed event should hold three lines"
        );
        assert_eq!(
            a.flush(5, true),
            vec![event(4, &format!("{chunk}\n"))],
            "the line that did not fit should start the next event"
        );
    }

    #[test]
    fn grouped_line_longer_than_the_limit_is_cut_into_events() {
        let mut a = Assembler::new(pattern("^start"));
        assert!(a.push("start", 1).is_empty(), "the first line should wait");
        let long = "x".repeat(MAX_EVENT_BYTES + 5);
        assert_eq!(
            a.push(&long, 2),
            vec![event(1, "start\n"), event(2, &"x".repeat(MAX_EVENT_BYTES))],
            "the long line should close the event before it and fill one of its own"
        );
        assert_eq!(
            a.push("start again", 3),
            vec![event(2, "xxxxx\n")],
            "the rest of the long line, with its newline, should be the next event"
        );
        assert_eq!(
            a.flush(4, true),
            vec![event(3, "start again\n")],
            "the last line should be flushed"
        );
    }
}
