//! Which server leads. Every server serves the API, the agent protocol and the registry; one
//! runs the reconcilers and housekeeping. On a store only one server opens (the embedded
//! one), that server leads alone. On a store with leases (etcd), the servers campaign for
//! [`LEADER_KEY`]: the first to create it, attached to a lease it keeps alive, leads; the
//! others look again every third of the lease's TTL and take over once its key is gone (a
//! leader that stops revokes its lease, so the next one takes over at once; one that dies
//! loses it when the TTL runs out). The leader runs each pass inside [`Leadership::lead`],
//! which fences every write the pass makes on the key's revision
//! ([`berth_store::Fenced`]): a leader that lost its lease and wakes up late writes nothing.

use berth_store::{Revision, Store};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The key the leader holds, at the store's root (every region shares one leader).
pub const LEADER_KEY: &str = "leader";

/// Where this server stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Another server leads (or none does yet).
    Follower,
    /// The only server on its store: it leads, with nothing to fence against.
    Sole,
    /// It holds [`LEADER_KEY`], created at `fence`.
    Leader { fence: Revision },
}

/// This server's standing, as the campaign keeps it.
#[derive(Debug, Clone)]
pub struct Leadership {
    rx: watch::Receiver<Standing>,
}

impl Leadership {
    /// A server alone on its store: it always leads.
    pub fn sole() -> Self {
        let (_tx, rx) = watch::channel(Standing::Sole);
        Leadership { rx }
    }

    pub fn standing(&self) -> Standing {
        *self.rx.borrow()
    }

    pub fn leads(&self) -> bool {
        self.standing() != Standing::Follower
    }

    /// Runs `pass` if this server leads, its writes fenced on its leadership; `None` (and
    /// `pass` never starts) if it follows.
    pub async fn lead<F: Future>(&self, pass: F) -> Option<F::Output> {
        match self.standing() {
            Standing::Follower => None,
            Standing::Sole => Some(pass.await),
            Standing::Leader { fence } => Some(berth_store::fence(fence, pass).await),
        }
    }

    /// Completes once the standing is other than `seen`.
    pub async fn changed_from(&self, seen: Standing) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|s| *s != seen).await.is_err() {
            // The campaign ended (the server stops): nothing changes any more.
            std::future::pending::<()>().await;
        }
    }
}

/// Campaigns for the leadership of `store` as `me`, with leases of `ttl`, until `stop`;
/// `Leadership::sole` when the store has no leases.
pub fn campaign(
    store: Arc<dyn Store>,
    me: String,
    ttl: Duration,
    stop: watch::Receiver<bool>,
) -> (Leadership, Option<tokio::task::JoinHandle<()>>) {
    if store.leases().is_none() {
        return (Leadership::sole(), None);
    }
    let (tx, rx) = watch::channel(Standing::Follower);
    let task = tokio::spawn(run(store, me, ttl, tx, stop));
    (Leadership { rx }, Some(task))
}

async fn run(
    store: Arc<dyn Store>,
    me: String,
    ttl: Duration,
    tx: watch::Sender<Standing>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(leases) = store.leases() else { return };
    let beat = ttl / 3;
    loop {
        if stopping(&stop) {
            return;
        }
        // Someone leads: nothing to campaign for until its key is gone.
        let held = matches!(store.get(LEADER_KEY).await, Ok(Some(_)));
        // The lease runs from before it was asked for, at the latest.
        let asked = Instant::now();
        let outcome = match held {
            true => Ok(None),
            false => try_to_lead(leases, &me, ttl).await,
        };
        match outcome {
            Ok(Some((lease, fence))) => {
                tracing::info!(
                    server = me,
                    fence,
                    "leading: reconcilers and housekeeping run here"
                );
                tx.send_replace(Standing::Leader { fence });
                // When the lease was last renewed, as this server can be sure of: before the
                // renewal was sent. etcd counts the TTL from when it got the request, later.
                let mut renewed = asked;
                let why = loop {
                    // Never asleep past the lease: a failed renewal is retried before it ends.
                    let nap = beat.min(ttl.saturating_sub(renewed.elapsed()));
                    let stopped = tokio::select! {
                        _ = tokio::time::sleep(nap) => false,
                        _ = stop.wait_for(|s| *s) => true,
                    };
                    if stopped {
                        tx.send_replace(Standing::Follower);
                        // The next leader need not wait out the TTL.
                        let _ = leases.revoke(lease).await;
                        return;
                    }
                    // A store that does not answer (a partition) must not keep this server
                    // leading past its lease: the checks get what is left of it.
                    let left = ttl.saturating_sub(renewed.elapsed());
                    let sent = Instant::now();
                    // Both at once: a slow member costs the time left once, not twice.
                    let checked = tokio::time::timeout(left, async {
                        tokio::join!(store.get(LEADER_KEY), leases.keep_alive(lease))
                    })
                    .await;
                    let Ok((key, alive)) = checked else {
                        break "the store did not answer before the lease ran out";
                    };
                    // The key itself must still be the one this server created (an operator
                    // may delete it while the lease lives).
                    match key {
                        Ok(Some(kv)) if kv.mod_revision == fence => {}
                        Ok(_) => break "its key was deleted or replaced",
                        Err(e) => {
                            tracing::warn!(error = %e, "reading the leader's key failed");
                        }
                    }
                    match alive {
                        Ok(true) => renewed = sent,
                        Ok(false) => break "the lease had expired",
                        // A member or the network failing: the lease still runs for a while.
                        Err(e) if renewed.elapsed() < ttl => {
                            tracing::warn!(error = %e, "renewing the leader's lease failed; retrying");
                        }
                        Err(_) => break "the lease could not be renewed in time",
                    }
                };
                tracing::warn!(server = me, reason = why, "no longer leading");
                tx.send_replace(Standing::Follower);
                let _ = leases.revoke(lease).await;
            }
            Ok(None) => {
                tx.send_replace(Standing::Follower);
            }
            Err(e) => {
                tracing::warn!(error = %e, "campaigning for leadership failed");
                tx.send_replace(Standing::Follower);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(beat) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// One campaign: a lease, and the key if nobody holds it. The lease and the revision the key
/// was created at when this server won.
async fn try_to_lead(
    leases: &dyn berth_store::Leases,
    me: &str,
    ttl: Duration,
) -> Result<Option<(berth_store::LeaseId, Revision)>, berth_store::StoreError> {
    let lease = leases.grant(ttl).await?;
    match leases
        .create_leased(LEADER_KEY, me.as_bytes().to_vec(), lease)
        .await
    {
        Ok(Some(fence)) => Ok(Some((lease, fence))),
        Ok(None) => {
            let _ = leases.revoke(lease).await;
            Ok(None)
        }
        Err(e) => {
            let _ = leases.revoke(lease).await;
            Err(e)
        }
    }
}
