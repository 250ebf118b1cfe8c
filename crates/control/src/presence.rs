//! Which agents are connected, in memory: every poll is a heartbeat, and an instance is
//! `agentConnected` while its last heartbeat is younger than [`Config::agent_timeout`](crate::Config).

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
}

impl Presence {
    pub fn new(timeout: Duration) -> Self {
        Presence {
            seen: Mutex::new(HashMap::new()),
            timeout,
            started: Instant::now(),
            arrivals: std::sync::atomic::AtomicU64::new(0),
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
    fn presence_expires() {
        let p = Presence::new(Duration::from_millis(30));
        assert!(!p.is_connected("a"));
        p.heartbeat("a");
        assert!(p.is_connected("a"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!p.is_connected("a"));
    }
}
