//! Target health as ELB reports it: the states and reason codes of `DescribeTargetHealth`,
//! the health-check success-code [`Matcher`], the per-target [`Tracker`] that turns probe
//! results into a state, and [`view`], what a target shows given its registration and group.
//!
//! Pure: the prober runs checks and feeds each [`Probe`] to the target's tracker with `now`.

/// A target's health state, ELB's `TargetHealth.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Registered; not enough checks yet to decide.
    Initial,
    /// Passed `healthy_threshold` checks in a row; gets traffic.
    Healthy,
    /// Failed `unhealthy_threshold` checks in a row.
    Unhealthy,
    /// Its group is not used by any listener.
    Unused,
    /// Deregistered, finishing its in-flight requests.
    Draining,
    /// Its group's health checks are disabled.
    Unavailable,
}

impl State {
    /// ELB's wire value (`initial`, `healthy`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Initial => "initial",
            State::Healthy => "healthy",
            State::Unhealthy => "unhealthy",
            State::Unused => "unused",
            State::Draining => "draining",
            State::Unavailable => "unavailable",
        }
    }
}

/// Why a target is not healthy, ELB's `TargetHealth.Reason` with its `Description`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `Elb.RegistrationInProgress`: no check has run yet.
    RegistrationInProgress,
    /// `Elb.InitialHealthChecking`: checks have run, too few to decide.
    InitialHealthChecking,
    /// `Target.ResponseCodeMismatch`: the check got this HTTP code, which the matcher rejects.
    ResponseCodeMismatch(u16),
    /// `Target.Timeout`: the check got no answer in time.
    Timeout,
    /// `Target.FailedHealthChecks`: the check failed otherwise (refused, reset, bad answer).
    FailedHealthChecks,
    /// `Target.NotRegistered`: the target is not in the group.
    NotRegistered,
    /// `Target.NotInUse`: no listener sends traffic to the group.
    NotInUse,
    /// `Target.DeregistrationInProgress`: the target is draining.
    DeregistrationInProgress,
    /// `Target.InvalidState`: the target (instance) is stopped.
    InvalidState,
    /// `Target.HealthCheckDisabled`: the group's checks are off.
    HealthCheckDisabled,
    /// `Elb.InternalError`: the checks could not run.
    InternalError,
}

impl Reason {
    /// ELB's reason code (`Target.Timeout`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::RegistrationInProgress => "Elb.RegistrationInProgress",
            Reason::InitialHealthChecking => "Elb.InitialHealthChecking",
            Reason::ResponseCodeMismatch(_) => "Target.ResponseCodeMismatch",
            Reason::Timeout => "Target.Timeout",
            Reason::FailedHealthChecks => "Target.FailedHealthChecks",
            Reason::NotRegistered => "Target.NotRegistered",
            Reason::NotInUse => "Target.NotInUse",
            Reason::DeregistrationInProgress => "Target.DeregistrationInProgress",
            Reason::InvalidState => "Target.InvalidState",
            Reason::HealthCheckDisabled => "Target.HealthCheckDisabled",
            Reason::InternalError => "Elb.InternalError",
        }
    }

    /// ELB's human description of the reason.
    pub fn description(&self) -> String {
        let text = match self {
            Reason::ResponseCodeMismatch(code) => {
                return format!("Health checks failed with these codes: [{code}]")
            }
            Reason::RegistrationInProgress => "Target registration is in progress",
            Reason::InitialHealthChecking => "Initial health checks in progress",
            Reason::Timeout => "Request timed out",
            Reason::FailedHealthChecks => "Health checks failed",
            Reason::NotRegistered => "Target is not registered to the target group",
            Reason::NotInUse => {
                "Target group is not configured to receive traffic from the load balancer"
            }
            Reason::DeregistrationInProgress => "Target deregistration is in progress",
            Reason::InvalidState => "Target is in the stopped state",
            Reason::HealthCheckDisabled => "Health checks are disabled",
            Reason::InternalError => "Health checks failed due to an internal error",
        };
        text.to_owned()
    }
}

/// The outcome of one health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Passed: an HTTP code the matcher accepts, or a TCP connection made.
    Ok,
    /// Answered with this HTTP code, which the matcher rejects.
    Code(u16),
    /// No answer within the check's timeout.
    Timeout,
    /// Failed otherwise (connection refused, reset, malformed response); for logs.
    Failed(String),
}

impl Probe {
    /// The reason a failed probe gives an unhealthy target; `None` for [`Probe::Ok`].
    fn failure(&self) -> Option<Reason> {
        match self {
            Probe::Ok => None,
            Probe::Code(code) => Some(Reason::ResponseCodeMismatch(*code)),
            Probe::Timeout => Some(Reason::Timeout),
            Probe::Failed(_) => Some(Reason::FailedHealthChecks),
        }
    }
}

/// The lowest HTTP code a matcher may accept (ELB's limit for HTTP checks).
const MIN_CODE: u16 = 200;
/// The highest HTTP code a matcher may accept (ELB's limit for HTTP checks).
const MAX_CODE: u16 = 499;

/// The HTTP codes a health check accepts, parsed from ELB's matcher (`"200"`, `"200,202"`,
/// `"200-299"`, `"200,300-399"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// Inclusive `(low, high)` ranges; a single code is `(code, code)`.
    ranges: Vec<(u16, u16)>,
}

impl Matcher {
    /// Parses a comma-separated list of codes and `low-high` ranges, each within 200-499.
    /// The error names the offending part.
    pub fn parse(spec: &str) -> Result<Matcher, String> {
        let mut ranges = Vec::new();
        for part in spec.split(',') {
            let part = part.trim();
            let (low, high) = match part.split_once('-') {
                Some((low, high)) => (code(low, part)?, code(high, part)?),
                None => {
                    let single = code(part, part)?;
                    (single, single)
                }
            };
            if low > high {
                return Err(format!(
                    "Health check matcher HTTP code range '{part}' must go from low to high"
                ));
            }
            ranges.push((low, high));
        }
        Ok(Matcher { ranges })
    }

    /// Whether `code` is one the health check accepts.
    pub fn contains(&self, code: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(low, high)| (low..=high).contains(&code))
    }
}

/// One code of a matcher part: digits only, within [`MIN_CODE`]..=[`MAX_CODE`].
fn code(text: &str, part: &str) -> Result<u16, String> {
    let text = text.trim();
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let parsed = if digits {
        text.parse::<u16>().ok()
    } else {
        None
    };
    parsed
        .filter(|code| (MIN_CODE..=MAX_CODE).contains(code))
        .ok_or_else(|| {
            format!(
                "Health check matcher HTTP code '{part}' must be a code from {MIN_CODE} to \
                 {MAX_CODE}, a list such as '200,202' or a range such as '200-299'"
            )
        })
}

/// One target's health-check state machine: counts consecutive passes and failures and
/// moves between [`State::Initial`], [`State::Healthy`] and [`State::Unhealthy`].
#[derive(Debug, Clone, PartialEq)]
pub struct Tracker {
    /// Initial, Healthy or Unhealthy.
    state: State,
    /// Why the target is not (yet) healthy; `None` while healthy.
    reason: Option<Reason>,
    /// Consecutive passes up to and including the last probe (0 if it failed).
    successes: u32,
    /// Consecutive failures up to and including the last probe (0 if it passed).
    failures: u32,
    /// When the target last became healthy, seconds since the epoch (slow start counts from
    /// here); `None` unless healthy.
    healthy_since: Option<f64>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

impl Tracker {
    /// A newly registered target: [`State::Initial`], `Elb.RegistrationInProgress`.
    pub fn new() -> Tracker {
        Tracker {
            state: State::Initial,
            reason: Some(Reason::RegistrationInProgress),
            successes: 0,
            failures: 0,
            healthy_since: None,
        }
    }

    /// Records one probe taken at `now` (seconds since the epoch). Becomes healthy after
    /// `healthy_threshold` passes in a row (from Initial or Unhealthy), unhealthy after
    /// `unhealthy_threshold` failures in a row (from Initial or Healthy). While unhealthy the
    /// reason is the last failure's. Thresholds below 1 count as 1.
    pub fn observe(
        &mut self,
        probe: &Probe,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
        now: f64,
    ) {
        match probe.failure() {
            None => {
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
                if self.state != State::Healthy && self.successes >= healthy_threshold.max(1) {
                    self.state = State::Healthy;
                    self.reason = None;
                    self.healthy_since = Some(now);
                } else if self.state == State::Initial {
                    self.reason = Some(Reason::InitialHealthChecking);
                }
                // Unhealthy and recovering: keeps the last failure's reason.
            }
            Some(reason) => {
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                if self.state == State::Unhealthy {
                    self.reason = Some(reason);
                } else if self.failures >= unhealthy_threshold.max(1) {
                    self.state = State::Unhealthy;
                    self.reason = Some(reason);
                    self.healthy_since = None;
                } else if self.state == State::Initial {
                    self.reason = Some(Reason::InitialHealthChecking);
                }
                // Healthy below the threshold: stays healthy, no reason.
            }
        }
    }

    /// Initial, Healthy or Unhealthy.
    pub fn state(&self) -> State {
        self.state
    }

    /// Why the target is not healthy; `None` while healthy.
    pub fn reason(&self) -> Option<&Reason> {
        self.reason.as_ref()
    }

    /// When the target last became healthy (seconds since the epoch); `None` unless healthy.
    pub fn healthy_since(&self) -> Option<f64> {
        self.healthy_since
    }

    /// Consecutive passes ending with the last probe.
    pub fn successes(&self) -> u32 {
        self.successes
    }

    /// Consecutive failures ending with the last probe.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// What `DescribeTargetHealth` shows for a registered target, first match wins: a
/// deregistered target is draining; a target of a group no listener uses is unused; with
/// checks disabled it is unavailable; without a tracker (no check yet) it is initial;
/// otherwise its tracker's state and reason.
pub fn view(
    tracker: Option<&Tracker>,
    deregistered: bool,
    enabled: bool,
    in_use: bool,
) -> (State, Option<Reason>) {
    if deregistered {
        (State::Draining, Some(Reason::DeregistrationInProgress))
    } else if !in_use {
        (State::Unused, Some(Reason::NotInUse))
    } else if !enabled {
        (State::Unavailable, Some(Reason::HealthCheckDisabled))
    } else {
        match tracker {
            None => (State::Initial, Some(Reason::RegistrationInProgress)),
            Some(tracker) => (tracker.state, tracker.reason.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `probes` one second apart from `start`, with thresholds 3 (healthy) and 2
    /// (unhealthy).
    fn feed(tracker: &mut Tracker, probes: &[Probe], start: f64) {
        for (i, probe) in probes.iter().enumerate() {
            tracker.observe(probe, 3, 2, start + i as f64);
        }
    }

    fn healthy_tracker(at: f64) -> Tracker {
        let mut tracker = Tracker::new();
        feed(&mut tracker, &[Probe::Ok, Probe::Ok, Probe::Ok], at - 2.0);
        assert_eq!(
            tracker.state(),
            State::Healthy,
            "setup: three passes make healthy"
        );
        tracker
    }

    #[test]
    fn state_wire_values_are_elb_s() {
        let expected = [
            (State::Initial, "initial"),
            (State::Healthy, "healthy"),
            (State::Unhealthy, "unhealthy"),
            (State::Unused, "unused"),
            (State::Draining, "draining"),
            (State::Unavailable, "unavailable"),
        ];
        for (state, wire) in expected {
            assert_eq!(state.as_str(), wire, "wire value of {state:?}");
        }
    }

    #[test]
    fn reason_codes_and_descriptions_are_elb_s() {
        let expected = [
            (
                Reason::RegistrationInProgress,
                "Elb.RegistrationInProgress",
                "Target registration is in progress",
            ),
            (
                Reason::InitialHealthChecking,
                "Elb.InitialHealthChecking",
                "Initial health checks in progress",
            ),
            (
                Reason::ResponseCodeMismatch(503),
                "Target.ResponseCodeMismatch",
                "Health checks failed with these codes: [503]",
            ),
            (Reason::Timeout, "Target.Timeout", "Request timed out"),
            (
                Reason::FailedHealthChecks,
                "Target.FailedHealthChecks",
                "Health checks failed",
            ),
            (
                Reason::NotRegistered,
                "Target.NotRegistered",
                "Target is not registered to the target group",
            ),
            (
                Reason::NotInUse,
                "Target.NotInUse",
                "Target group is not configured to receive traffic from the load balancer",
            ),
            (
                Reason::DeregistrationInProgress,
                "Target.DeregistrationInProgress",
                "Target deregistration is in progress",
            ),
            (
                Reason::InvalidState,
                "Target.InvalidState",
                "Target is in the stopped state",
            ),
            (
                Reason::HealthCheckDisabled,
                "Target.HealthCheckDisabled",
                "Health checks are disabled",
            ),
            (
                Reason::InternalError,
                "Elb.InternalError",
                "Health checks failed due to an internal error",
            ),
        ];
        for (reason, code, description) in expected {
            assert_eq!(reason.as_str(), code, "reason code of {reason:?}");
            assert_eq!(
                reason.description(),
                description,
                "description of {reason:?}"
            );
        }
    }

    #[test]
    fn matcher_accepts_codes_lists_and_ranges() {
        let cases: &[(&str, &[u16], &[u16])] = &[
            ("200", &[200], &[199, 201, 404]),
            ("200,202", &[200, 202], &[201, 203]),
            ("200-299", &[200, 250, 299], &[199, 300]),
            ("200,300-399", &[200, 300, 399], &[201, 299, 400]),
            (" 200 , 404 ", &[200, 404], &[300]),
            ("499", &[499], &[498]),
        ];
        for (spec, inside, outside) in cases {
            let matcher = Matcher::parse(spec).expect("valid matcher parses");
            for code in *inside {
                assert!(
                    matcher.contains(*code),
                    "matcher {spec:?} should accept {code}"
                );
            }
            for code in *outside {
                assert!(
                    !matcher.contains(*code),
                    "matcher {spec:?} should reject {code}"
                );
            }
        }
    }

    #[test]
    fn matcher_rejects_bad_specs_naming_the_part() {
        for (spec, part) in [
            ("", "''"),
            ("199", "'199'"),
            ("500", "'500'"),
            ("abc", "'abc'"),
            ("+200", "'+200'"),
            ("200,", "''"),
            ("200-", "'200-'"),
            ("-299", "'-299'"),
            ("200-600", "'200-600'"),
            ("299-200", "'299-200'"),
            ("200-250-299", "'200-250-299'"),
        ] {
            let error = Matcher::parse(spec).expect_err("invalid matcher must be rejected");
            assert!(
                error.starts_with("Health check matcher HTTP code") && error.contains(part),
                "error for {spec:?} should name {part}: {error}"
            );
        }
    }

    #[test]
    fn new_tracker_is_initial_registration_in_progress() {
        let tracker = Tracker::new();
        assert_eq!(tracker.state(), State::Initial, "new tracker state");
        assert_eq!(
            tracker.reason(),
            Some(&Reason::RegistrationInProgress),
            "new tracker reason"
        );
        assert_eq!(
            tracker.healthy_since(),
            None,
            "new tracker has never been healthy"
        );
        assert_eq!(Tracker::default(), tracker, "default should equal new");
    }

    #[test]
    fn first_probe_starts_initial_health_checking() {
        for probe in [Probe::Ok, Probe::Timeout] {
            let mut tracker = Tracker::new();
            feed(&mut tracker, std::slice::from_ref(&probe), 0.0);
            assert_eq!(
                tracker.state(),
                State::Initial,
                "one {probe:?} decides nothing"
            );
            assert_eq!(
                tracker.reason(),
                Some(&Reason::InitialHealthChecking),
                "reason after one {probe:?}"
            );
        }
    }

    #[test]
    fn initial_becomes_healthy_after_threshold_passes() {
        let mut tracker = Tracker::new();
        feed(&mut tracker, &[Probe::Ok, Probe::Ok], 100.0);
        assert_eq!(
            tracker.state(),
            State::Initial,
            "two passes of three needed"
        );
        tracker.observe(&Probe::Ok, 3, 2, 102.0);
        assert_eq!(
            tracker.state(),
            State::Healthy,
            "third pass should make healthy"
        );
        assert_eq!(tracker.reason(), None, "healthy has no reason");
        assert_eq!(
            tracker.healthy_since(),
            Some(102.0),
            "healthy since the third pass"
        );
        tracker.observe(&Probe::Ok, 3, 2, 103.0);
        assert_eq!(
            tracker.healthy_since(),
            Some(102.0),
            "more passes keep healthy_since"
        );
    }

    #[test]
    fn initial_becomes_unhealthy_after_threshold_failures() {
        let mut tracker = Tracker::new();
        feed(&mut tracker, &[Probe::Timeout, Probe::Code(503)], 0.0);
        assert_eq!(
            tracker.state(),
            State::Unhealthy,
            "two failures should make unhealthy"
        );
        assert_eq!(
            tracker.reason(),
            Some(&Reason::ResponseCodeMismatch(503)),
            "reason is the last failure's"
        );
    }

    #[test]
    fn streaks_must_be_consecutive() {
        let mut tracker = Tracker::new();
        feed(
            &mut tracker,
            &[Probe::Ok, Probe::Ok, Probe::Timeout, Probe::Ok, Probe::Ok],
            0.0,
        );
        assert_eq!(
            tracker.state(),
            State::Initial,
            "a failure should reset the pass streak"
        );
        assert_eq!(tracker.successes(), 2, "passes since the failure");
        assert_eq!(tracker.failures(), 0, "a pass resets the failure streak");
    }

    #[test]
    fn healthy_becomes_unhealthy_only_after_threshold_failures() {
        let mut tracker = healthy_tracker(10.0);
        tracker.observe(&Probe::Timeout, 3, 2, 11.0);
        assert_eq!(
            tracker.state(),
            State::Healthy,
            "one failure of two keeps healthy"
        );
        assert_eq!(
            tracker.reason(),
            None,
            "healthy below threshold has no reason"
        );
        tracker.observe(&Probe::Ok, 3, 2, 12.0);
        tracker.observe(&Probe::Timeout, 3, 2, 13.0);
        assert_eq!(
            tracker.state(),
            State::Healthy,
            "a pass in between resets the failures"
        );
        tracker.observe(&Probe::Timeout, 3, 2, 14.0);
        assert_eq!(
            tracker.state(),
            State::Unhealthy,
            "two failures in a row make unhealthy"
        );
        assert_eq!(
            tracker.reason(),
            Some(&Reason::Timeout),
            "reason of the last failure"
        );
        assert_eq!(
            tracker.healthy_since(),
            None,
            "unhealthy clears healthy_since"
        );
    }

    #[test]
    fn unhealthy_reason_follows_the_last_failure_and_survives_recovery_passes() {
        let mut tracker = Tracker::new();
        feed(&mut tracker, &[Probe::Timeout, Probe::Timeout], 0.0);
        tracker.observe(&Probe::Failed("connection refused".to_owned()), 3, 2, 2.0);
        assert_eq!(
            tracker.reason(),
            Some(&Reason::FailedHealthChecks),
            "a refused connection while unhealthy"
        );
        tracker.observe(&Probe::Ok, 3, 2, 3.0);
        assert_eq!(
            tracker.state(),
            State::Unhealthy,
            "one pass of three keeps unhealthy"
        );
        assert_eq!(
            tracker.reason(),
            Some(&Reason::FailedHealthChecks),
            "recovering keeps the last failure's reason"
        );
    }

    #[test]
    fn unhealthy_becomes_healthy_after_threshold_passes_with_new_since() {
        let mut tracker = healthy_tracker(10.0);
        feed(&mut tracker, &[Probe::Code(500), Probe::Code(500)], 11.0);
        assert_eq!(tracker.state(), State::Unhealthy, "setup: two failures");
        feed(&mut tracker, &[Probe::Ok, Probe::Ok, Probe::Ok], 20.0);
        assert_eq!(
            tracker.state(),
            State::Healthy,
            "three passes make healthy again"
        );
        assert_eq!(tracker.reason(), None, "healthy has no reason");
        assert_eq!(
            tracker.healthy_since(),
            Some(22.0),
            "healthy_since restarts at recovery"
        );
    }

    #[test]
    fn thresholds_below_one_count_as_one() {
        let mut tracker = Tracker::new();
        tracker.observe(&Probe::Ok, 0, 0, 5.0);
        assert_eq!(
            tracker.state(),
            State::Healthy,
            "threshold 0 acts as 1 for passes"
        );
        tracker.observe(&Probe::Timeout, 0, 0, 6.0);
        assert_eq!(
            tracker.state(),
            State::Unhealthy,
            "threshold 0 acts as 1 for failures"
        );
    }

    #[test]
    fn view_precedence_matches_describe_target_health() {
        let healthy = healthy_tracker(10.0);
        let cases = [
            (
                (Some(&healthy), true, true, true),
                (State::Draining, Some(Reason::DeregistrationInProgress)),
                "deregistered wins over everything",
            ),
            (
                (Some(&healthy), false, false, false),
                (State::Unused, Some(Reason::NotInUse)),
                "unused group wins over disabled checks",
            ),
            (
                (Some(&healthy), false, false, true),
                (State::Unavailable, Some(Reason::HealthCheckDisabled)),
                "disabled checks",
            ),
            (
                (None, false, true, true),
                (State::Initial, Some(Reason::RegistrationInProgress)),
                "no tracker yet",
            ),
            (
                (Some(&healthy), false, true, true),
                (State::Healthy, None),
                "the tracker's",
            ),
        ];
        for ((tracker, deregistered, enabled, in_use), expected, why) in cases {
            assert_eq!(
                view(tracker, deregistered, enabled, in_use),
                expected,
                "{why}"
            );
        }
    }
}
