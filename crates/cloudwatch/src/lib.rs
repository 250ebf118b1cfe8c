//! Berth's CloudWatch metrics store: each series (namespace, metric name, dimensions) keeps
//! statistic sets in one-minute buckets (and one-second buckets for high-resolution data), in
//! memory, with a journal of bucket merges on disk; queried the way GetMetricStatistics,
//! GetMetricData and ListMetrics ask.

mod journal;
pub mod store;

pub use store::{check, ListFilter, MetricStore};

use std::borrow::Cow;

/// What can go wrong in the metric store. The control plane turns these into CloudWatch's
/// exceptions.
#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    /// InvalidParameterValue, with CloudWatch's message.
    #[error("{0}")]
    Invalid(String),
    /// The disk failed us; nothing of the refused batch was kept.
    #[error("metric storage failed at {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A metric's identity: namespace, name and dimensions, the dimensions sorted (by name, then
/// value) so that the same dimensions given in any order name the same series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub namespace: String,
    pub metric_name: String,
    /// (name, value), sorted.
    pub dimensions: Vec<(String, String)>,
}

impl SeriesKey {
    /// A key with its dimensions sorted. Two dimensions of one name are kept as given (see
    /// [`SeriesKey::has_duplicate_dimension`]); refusing them is the caller's business.
    pub fn new(
        namespace: impl Into<String>,
        metric_name: impl Into<String>,
        mut dimensions: Vec<(String, String)>,
    ) -> SeriesKey {
        dimensions.sort();
        SeriesKey {
            namespace: namespace.into(),
            metric_name: metric_name.into(),
            dimensions,
        }
    }

    /// Whether two dimensions share a name (CloudWatch refuses such a datum).
    pub fn has_duplicate_dimension(&self) -> bool {
        let mut names: Vec<&str> = self.dimensions.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names.windows(2).any(|w| w[0] == w[1])
    }

    /// This key with its dimensions sorted: itself when they already are (keys built by
    /// [`SeriesKey::new`]), a sorted copy when a caller filled the fields by hand.
    pub(crate) fn normalized(&self) -> Cow<'_, SeriesKey> {
        if self.dimensions.windows(2).all(|w| w[0] <= w[1]) {
            Cow::Borrowed(self)
        } else {
            let mut key = self.clone();
            key.dimensions.sort();
            Cow::Owned(key)
        }
    }
}

/// CloudWatch's StandardUnit. The declaration order is the journal's unit code (see
/// [`Unit::code`]): never reorder or remove a variant, only append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Unit {
    Seconds,
    Microseconds,
    Milliseconds,
    Bytes,
    Kilobytes,
    Megabytes,
    Gigabytes,
    Terabytes,
    Bits,
    Kilobits,
    Megabits,
    Gigabits,
    Terabits,
    Percent,
    Count,
    BytesPerSecond,
    KilobytesPerSecond,
    MegabytesPerSecond,
    GigabytesPerSecond,
    TerabytesPerSecond,
    BitsPerSecond,
    KilobitsPerSecond,
    MegabitsPerSecond,
    GigabitsPerSecond,
    TerabitsPerSecond,
    CountPerSecond,
    /// What a datum without a unit has.
    #[default]
    None,
}

impl Unit {
    /// Every unit, in declaration (and code) order.
    pub const ALL: [Unit; 27] = [
        Unit::Seconds,
        Unit::Microseconds,
        Unit::Milliseconds,
        Unit::Bytes,
        Unit::Kilobytes,
        Unit::Megabytes,
        Unit::Gigabytes,
        Unit::Terabytes,
        Unit::Bits,
        Unit::Kilobits,
        Unit::Megabits,
        Unit::Gigabits,
        Unit::Terabits,
        Unit::Percent,
        Unit::Count,
        Unit::BytesPerSecond,
        Unit::KilobytesPerSecond,
        Unit::MegabytesPerSecond,
        Unit::GigabytesPerSecond,
        Unit::TerabytesPerSecond,
        Unit::BitsPerSecond,
        Unit::KilobitsPerSecond,
        Unit::MegabitsPerSecond,
        Unit::GigabitsPerSecond,
        Unit::TerabitsPerSecond,
        Unit::CountPerSecond,
        Unit::None,
    ];

    /// The unit's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Seconds => "Seconds",
            Unit::Microseconds => "Microseconds",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
            Unit::Kilobytes => "Kilobytes",
            Unit::Megabytes => "Megabytes",
            Unit::Gigabytes => "Gigabytes",
            Unit::Terabytes => "Terabytes",
            Unit::Bits => "Bits",
            Unit::Kilobits => "Kilobits",
            Unit::Megabits => "Megabits",
            Unit::Gigabits => "Gigabits",
            Unit::Terabits => "Terabits",
            Unit::Percent => "Percent",
            Unit::Count => "Count",
            Unit::BytesPerSecond => "Bytes/Second",
            Unit::KilobytesPerSecond => "Kilobytes/Second",
            Unit::MegabytesPerSecond => "Megabytes/Second",
            Unit::GigabytesPerSecond => "Gigabytes/Second",
            Unit::TerabytesPerSecond => "Terabytes/Second",
            Unit::BitsPerSecond => "Bits/Second",
            Unit::KilobitsPerSecond => "Kilobits/Second",
            Unit::MegabitsPerSecond => "Megabits/Second",
            Unit::GigabitsPerSecond => "Gigabits/Second",
            Unit::TerabitsPerSecond => "Terabits/Second",
            Unit::CountPerSecond => "Count/Second",
            Unit::None => "None",
        }
    }

    /// The unit of a wire name (exact, case-sensitive, as CloudWatch is).
    pub fn parse(s: &str) -> Option<Unit> {
        Unit::ALL.iter().copied().find(|u| u.as_str() == s)
    }

    /// The unit's code in the journal.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The unit of a journal code.
    pub fn from_code(code: u8) -> Option<Unit> {
        Unit::ALL.get(usize::from(code)).copied()
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A statistic set, CloudWatch's StatisticSet: Sum, SampleCount, Minimum and Maximum of the
/// values it stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub sum: f64,
    pub count: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// The set of one value.
    pub fn from_value(v: f64) -> Stats {
        Stats {
            sum: v,
            count: 1.0,
            min: v,
            max: v,
        }
    }

    /// Adds `other`'s values to this set.
    pub fn merge(&mut self, other: Stats) {
        self.sum += other.sum;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Sum over SampleCount (0 for an empty set, which the store never holds).
    pub fn average(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            0.0
        }
    }
}

/// One datum to store: what one PutMetricData item (or an internal publisher) writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub key: SeriesKey,
    pub timestamp_ms: i64,
    pub unit: Unit,
    pub stats: Stats,
    /// StorageResolution 1: kept in one-second buckets too.
    pub high_resolution: bool,
}

/// The statistics GetMetricStatistics and GetMetricData compute from a statistic set
/// (percentiles and the other extended statistics are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Statistic {
    SampleCount,
    Average,
    Sum,
    Minimum,
    Maximum,
}

impl Statistic {
    /// Every statistic.
    pub const ALL: [Statistic; 5] = [
        Statistic::SampleCount,
        Statistic::Average,
        Statistic::Sum,
        Statistic::Minimum,
        Statistic::Maximum,
    ];

    /// The statistic's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Statistic::SampleCount => "SampleCount",
            Statistic::Average => "Average",
            Statistic::Sum => "Sum",
            Statistic::Minimum => "Minimum",
            Statistic::Maximum => "Maximum",
        }
    }

    /// The statistic of a wire name (exact, case-sensitive).
    pub fn parse(s: &str) -> Option<Statistic> {
        Statistic::ALL.iter().copied().find(|st| st.as_str() == s)
    }

    /// This statistic of a set.
    pub fn value(&self, s: &Stats) -> f64 {
        match self {
            Statistic::SampleCount => s.count,
            Statistic::Average => s.average(),
            Statistic::Sum => s.sum,
            Statistic::Minimum => s.min,
            Statistic::Maximum => s.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_trip_through_names_and_codes() {
        for (i, u) in Unit::ALL.iter().copied().enumerate() {
            assert_eq!(Unit::parse(u.as_str()), Some(u), "{u:?} should parse back");
            assert_eq!(
                usize::from(u.code()),
                i,
                "{u:?}'s code should be its place in ALL"
            );
            assert_eq!(
                Unit::from_code(u.code()),
                Some(u),
                "{u:?} should decode back"
            );
        }
        assert_eq!(Unit::parse("Bytes/Second"), Some(Unit::BytesPerSecond));
        assert_eq!(Unit::parse("Count/Second"), Some(Unit::CountPerSecond));
        assert_eq!(
            Unit::parse("seconds"),
            None,
            "unit names are case-sensitive"
        );
        assert_eq!(
            Unit::from_code(27),
            None,
            "codes past the last unit are invalid"
        );
        assert_eq!(
            Unit::default(),
            Unit::None,
            "a datum without a unit has None"
        );
        let mut sorted = Unit::ALL;
        sorted.sort();
        assert_eq!(
            sorted,
            Unit::ALL,
            "the order of units should follow their codes"
        );
    }

    #[test]
    fn statistics_parse_exactly_and_read_the_set() {
        let mut s = Stats::from_value(2.0);
        s.merge(Stats::from_value(6.0));
        s.merge(Stats {
            sum: 10.0,
            count: 2.0,
            min: 1.0,
            max: 9.0,
        });
        assert_eq!(
            s,
            Stats {
                sum: 18.0,
                count: 4.0,
                min: 1.0,
                max: 9.0
            },
            "merging should add sums and counts and keep the extremes"
        );
        let want = [
            ("SampleCount", 4.0),
            ("Average", 4.5),
            ("Sum", 18.0),
            ("Minimum", 1.0),
            ("Maximum", 9.0),
        ];
        for (name, value) in want {
            let st = Statistic::parse(name).expect("a CloudWatch statistic name should parse");
            assert_eq!(st.as_str(), name, "{name} should print as it parsed");
            assert_eq!(st.value(&s), value, "{name} of the merged set");
        }
        assert_eq!(
            Statistic::parse("average"),
            None,
            "names are case-sensitive"
        );
        assert_eq!(Statistic::parse("p99"), None, "percentiles are not kept");
    }

    #[test]
    fn keys_sort_their_dimensions_and_spot_duplicates() {
        let dims = |d: &[(&str, &str)]| -> Vec<(String, String)> {
            d.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        let a = SeriesKey::new("NS", "M", dims(&[("b", "2"), ("a", "1")]));
        let b = SeriesKey::new("NS", "M", dims(&[("a", "1"), ("b", "2")]));
        assert_eq!(a, b, "dimension order should not matter");
        assert_eq!(a.dimensions, dims(&[("a", "1"), ("b", "2")]));
        assert!(!a.has_duplicate_dimension(), "a and b are distinct names");
        let dup = SeriesKey::new("NS", "M", dims(&[("a", "1"), ("b", "2"), ("a", "3")]));
        assert!(dup.has_duplicate_dimension(), "a appears twice");
        let by_hand = SeriesKey {
            namespace: "NS".into(),
            metric_name: "M".into(),
            dimensions: dims(&[("b", "2"), ("a", "1")]),
        };
        assert_eq!(
            *by_hand.normalized(),
            a,
            "a key filled by hand should normalize to the sorted one"
        );
        assert!(
            matches!(a.normalized(), Cow::Borrowed(_)),
            "a sorted key should not be copied"
        );
    }
}
