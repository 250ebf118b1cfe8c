//! Which agents are connected: every poll is a heartbeat, and an instance is `agentConnected`
//! while its last heartbeat is younger than [`Config::agent_timeout`](crate::Config). Kept in
//! memory; on a store several servers share, each server also writes when it last heard an
//! agent (`presence/INSTANCE_ARN`, at most every quarter of the timeout), and every server
//! takes those records from its watch ([`Presence::heard_at`]), so the leader knows of agents
//! that poll another server.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When each instance's agent was last heard from.
#[derive(Debug)]
pub struct Presence {
    seen: Mutex<HashMap<String, Instant>>,
    timeout: Duration,
    /// An agent never heard from since this server started counts from here, so a restarted
    /// server gives every agent a full timeout to come back.
    started: Instant,
    /// Moves whenever an agent that was not connected is heard from, so placement knows its
    /// view of who is connected is out of date without asking about every instance.
    arrivals: std::sync::atomic::AtomicU64,
    /// When this server last wrote each agent's presence to the store.
    published: Mutex<HashMap<String, Instant>>,
}

impl Presence {
    pub fn new(timeout: Duration) -> Self {
        Presence {
            seen: Mutex::new(HashMap::new()),
            timeout,
            started: Instant::now(),
            arrivals: std::sync::atomic::AtomicU64::new(0),
            published: Mutex::new(HashMap::new()),
        }
    }

    /// Another server heard the agent at `at` (epoch seconds; `now` is this server's clock).
    pub fn heard_at(&self, instance_arn: &str, at: f64, now: f64) {
        let age = Duration::from_secs_f64((now - at).clamp(0.0, 1e9));
        let Some(then) = Instant::now().checked_sub(age) else {
            return;
        };
        if let Ok(mut m) = self.seen.lock() {
            let before = m.get(instance_arn).copied();
            if before.is_some_and(|b| b >= then) {
                return;
            }
            m.insert(instance_arn.to_string(), then);
            if before.is_none_or(|t| then.duration_since(t) >= self.timeout) {
                self.arrivals
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Whether this server should write the agent's presence to the store now: once a
    /// quarter of the timeout at most, so other servers never think it gone.
    pub fn due_to_publish(&self, instance_arn: &str) -> bool {
        let Ok(mut m) = self.published.lock() else {
            return false;
        };
        let now = Instant::now();
        match m.get(instance_arn) {
            Some(t) if now.duration_since(*t) < self.timeout / 4 => false,
            _ => {
                m.insert(instance_arn.to_string(), now);
                true
            }
        }
    }

    pub fn heartbeat(&self, instance_arn: &str) {
        if let Ok(mut m) = self.seen.lock() {
            let now = Instant::now();
            let before = m.insert(instance_arn.to_string(), now);
            if before.is_none_or(|t| now.duration_since(t) >= self.timeout) {
                self.arrivals
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// How many agents were heard from within the timeout.
    pub fn connected(&self) -> usize {
        self.seen
            .lock()
            .map(|m| m.values().filter(|t| t.elapsed() < self.timeout).count())
            .unwrap_or(0)
    }

    /// A count that moves whenever a disconnected (or new) agent is heard from.
    pub fn arrivals(&self) -> u64 {
        self.arrivals.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Not heard from for longer than the timeout (counting from this server's start).
    pub fn is_gone(&self, instance_arn: &str) -> bool {
        let last = self
            .seen
            .lock()
            .ok()
            .and_then(|m| m.get(instance_arn).copied())
            .unwrap_or(self.started);
        last.elapsed() >= self.timeout
    }

    pub fn is_connected(&self, instance_arn: &str) -> bool {
        self.seen
            .lock()
            .ok()
            .and_then(|m| m.get(instance_arn).copied())
            .is_some_and(|t| t.elapsed() < self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_servers_word_counts_and_publishing_is_rate_limited() {
        let p = Presence::new(Duration::from_secs(60));
        let now = 1_000_000.0;
        p.heard_at("a", now - 10.0, now);
        assert!(p.is_connected("a"), "heard 10 s ago elsewhere");
        p.heard_at("b", now - 120.0, now);
        assert!(p.is_gone("b"), "heard too long ago");
        p.heartbeat("b");
        p.heard_at("b", now - 120.0, now);
        assert!(
            p.is_connected("b"),
            "an older word never hides a newer heartbeat"
        );
        assert!(p.due_to_publish("a"));
        assert!(
            !p.due_to_publish("a"),
            "not again within a quarter of the timeout"
        );
    }

    #[test]
    fn presence_expires() {
        let p = Presence::new(Duration::from_millis(30));
        assert!(!p.is_connected("a"));
        p.heartbeat("a");
        assert!(p.is_connected("a"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!p.is_connected("a"));
    }
}
