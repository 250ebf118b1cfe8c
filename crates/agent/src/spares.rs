//! The subnets' networks an agent uses, and their warm pause containers.
//!
//! Starting the container that holds an `awsvpc` task's network namespace (which makes its
//! interface on the subnet's bridge) is the slowest step of starting the task. So each subnet
//! network keeps up to [`SPARES`] pause containers started ahead, on addresses EC2 reserves in
//! every subnet (the network address + 2 and + 3, which no task is given). A new task without a
//! public address takes one and moves it to its own address (disconnect, connect at the
//! address, rename): one container start on its path instead of two. A task with a public
//! address gets a pause container of its own (Docker publishes ports only when a container is
//! created), and so does every task when no spare is ready.
//!
//! The bookkeeping here is pure; the engine does the Docker calls. A network counts the tasks
//! using it: the last one to leave takes its spares away with it, so the network can go.

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Warm pause containers kept per subnet network.
pub const SPARES: usize = 2;

/// The label of a spare pause container (value: the subnet's id). It keeps the label once a
/// task takes it; its name says which task (see [`crate::engine::container_name`]).
pub const SPARE_LABEL: &str = "io.berth.spare-pause";

/// The name prefix of a spare not yet taken.
pub const SPARE_NAME_PREFIX: &str = "berth-spare-";

/// The id of the task that took the spare pause container named `name` (its name became
/// the task's pause container's, which ends with the task's id); `None` for one not taken.
pub fn taken_by(name: &str) -> Option<&str> {
    if name.starts_with(SPARE_NAME_PREFIX) {
        return None;
    }
    name.rsplit('-').next().filter(|id| !id.is_empty())
}

/// A started pause container waiting for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spare {
    pub id: String,
    /// The reserved address it holds.
    pub ip: String,
}

#[derive(Debug, Default)]
struct Net {
    tasks: usize,
    spares: Vec<Spare>,
    refilling: bool,
}

/// Every subnet network of the agent's tasks: how many tasks use it and its spares.
#[derive(Debug, Default)]
pub struct Subnets {
    nets: HashMap<String, Net>,
    /// The agent is exiting: no more spares.
    closed: bool,
}

/// The addresses spares may hold in `cidr`: EC2's reserved network address + 2 and + 3.
pub fn spare_slots(cidr: &str) -> Vec<String> {
    let Some((ip, len)) = cidr.split_once('/') else {
        return Vec::new();
    };
    let (Ok(ip), Ok(len)) = (ip.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return Vec::new();
    };
    // A block too small to hold its reserved addresses and a task has no spares.
    if !(1..=28).contains(&len) {
        return Vec::new();
    }
    let base = u32::from(ip) & (u32::MAX << (32 - len));
    (2..2 + SPARES as u32)
        .map(|k| Ipv4Addr::from(base + k).to_string())
        .collect()
}

impl Subnets {
    /// A task joins `network`; with `want_spare`, it takes a spare if one is ready.
    pub fn join(&mut self, network: &str, want_spare: bool) -> Option<Spare> {
        let net = self.nets.entry(network.to_string()).or_default();
        net.tasks += 1;
        if want_spare {
            net.spares.pop()
        } else {
            None
        }
    }

    /// A task leaves `network`. When it was the last, the network's spares come back to be
    /// removed (then the network can be) and `true`.
    pub fn leave(&mut self, network: &str) -> (bool, Vec<Spare>) {
        let Some(net) = self.nets.get_mut(network) else {
            return (true, Vec::new());
        };
        net.tasks = net.tasks.saturating_sub(1);
        if net.tasks > 0 {
            return (false, Vec::new());
        }
        let spares = std::mem::take(&mut net.spares);
        if !net.refilling {
            self.nets.remove(network);
        }
        (true, spares)
    }

    /// The addresses of `slots` to start new spares on, now that a task uses `network`; the
    /// network is then refilling until [`Subnets::refilled`]. Empty when it is full, already
    /// refilling, or unused.
    pub fn to_refill(&mut self, network: &str, slots: &[String]) -> Vec<String> {
        let Some(net) = self.nets.get_mut(network).filter(|_| !self.closed) else {
            return Vec::new();
        };
        if net.refilling || net.tasks == 0 {
            return Vec::new();
        }
        let free: Vec<String> = slots
            .iter()
            .filter(|s| !net.spares.iter().any(|sp| &sp.ip == *s))
            .cloned()
            .collect();
        net.refilling = !free.is_empty();
        free
    }

    /// New spares of `network` are ready. Those a network no task uses any more come back,
    /// to be removed (and then the network, `true`).
    pub fn refilled(&mut self, network: &str, new: Vec<Spare>) -> (bool, Vec<Spare>) {
        let Some(net) = self.nets.get_mut(network) else {
            return (true, new);
        };
        net.refilling = false;
        if self.closed {
            // The agent is exiting; its tasks (and so the network) may stay.
            return (false, new);
        }
        if net.tasks == 0 {
            self.nets.remove(network);
            return (true, new);
        }
        net.spares.extend(new);
        (false, Vec::new())
    }

    /// Whether a task of this agent uses `network`.
    pub fn in_use(&self, network: &str) -> bool {
        self.nets.get(network).is_some_and(|n| n.tasks > 0)
    }

    /// Every spare, for the agent's exit; none is kept from then on.
    pub fn drain(&mut self) -> Vec<Spare> {
        self.closed = true;
        self.nets
            .values_mut()
            .flat_map(|n| std::mem::take(&mut n.spares))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spare(ip: &str) -> Spare {
        Spare {
            id: format!("c-{ip}"),
            ip: ip.into(),
        }
    }

    #[test]
    fn a_taken_spare_names_its_task() {
        assert_eq!(
            taken_by("ecs-web-4-internalecspause-abc123"),
            Some("abc123")
        );
        assert_eq!(taken_by("berth-spare-subnet-1-10-0-1-2-i"), None);
    }

    #[test]
    fn slots_are_the_subnets_reserved_addresses() {
        assert_eq!(spare_slots("10.1.2.0/24"), ["10.1.2.2", "10.1.2.3"]);
        assert_eq!(spare_slots("10.1.2.77/20"), ["10.1.0.2", "10.1.0.3"]);
        assert!(spare_slots("10.1.2.0/30").is_empty(), "too small");
        assert!(spare_slots("nonsense").is_empty());
    }

    #[test]
    fn tasks_take_spares_refills_fill_the_free_slots_and_the_last_task_takes_them_away() {
        let slots = spare_slots("10.0.0.0/24");
        let mut s = Subnets::default();
        assert_eq!(s.join("n", true), None, "nothing warm yet");
        assert_eq!(s.to_refill("n", &slots), slots);
        assert!(s.to_refill("n", &slots).is_empty(), "one refill at a time");
        assert_eq!(
            s.refilled("n", vec![spare("10.0.0.2"), spare("10.0.0.3")]),
            (false, vec![])
        );
        let taken = s.join("n", true).expect("a warm spare");
        assert_eq!(s.join("n", false), None, "a task with a public address");
        // Only the slot the taken spare left is refilled.
        assert_eq!(s.to_refill("n", &slots), vec![taken.ip.clone()]);
        assert_eq!(s.refilled("n", vec![spare(&taken.ip)]), (false, vec![]));
        assert_eq!(s.leave("n"), (false, vec![]));
        assert_eq!(s.leave("n"), (false, vec![]));
        let (last, spares) = s.leave("n");
        assert!(last);
        assert_eq!(spares.len(), 2, "the last task takes the spares away");
        assert!(s.nets.is_empty());
    }

    #[test]
    fn spares_made_after_the_last_task_left_go_at_once() {
        let slots = spare_slots("10.0.0.0/24");
        let mut s = Subnets::default();
        s.join("n", true);
        let free = s.to_refill("n", &slots);
        assert_eq!(s.leave("n"), (true, vec![]));
        let made: Vec<Spare> = free.iter().map(|ip| spare(ip)).collect();
        assert_eq!(s.refilled("n", made.clone()), (true, made));
        assert!(s.nets.is_empty());
        assert!(s.drain().is_empty());
    }

    #[test]
    fn after_the_drain_at_exit_no_spare_is_kept() {
        let slots = spare_slots("10.0.0.0/24");
        let mut s = Subnets::default();
        s.join("n", true);
        let free = s.to_refill("n", &slots);
        assert!(s.drain().is_empty());
        // A refill under way when the agent exits hands its spares back, network kept.
        let made: Vec<Spare> = free.iter().map(|ip| spare(ip)).collect();
        assert_eq!(s.refilled("n", made.clone()), (false, made));
        assert!(s.to_refill("n", &slots).is_empty());
    }
}
