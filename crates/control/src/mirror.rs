//! Watch-fed copies of the few records every request reads: access keys (SigV4 needs one per
//! request) and task definitions with their families' revision counters. Served from memory,
//! they cost the store nothing; on etcd that is most of what an API call would otherwise
//! spend there.
//!
//! A [`Mirror`] holds every key under one prefix of one store. It loads them, then follows the
//! store's watch; when the watch fails (fallen behind, history compacted) it is not served
//! until it has loaded again. It is only ever an accelerator:
//!
//! - A key it does not hold is read from the store ([`Mirror::get`] answers "not here", never
//!   "absent"): a record another server wrote a moment ago is found either way.
//! - What this server commits is written through at the commit's revision, so its own next
//!   request sees it (read-your-writes on one server); a change already applied at a newer
//!   revision is never overwritten by an older one.
//! - A record another server changed is seen here once the watch delivers it (milliseconds):
//!   the same eventual consistency ECS and IAM document for reads after writes.

use berth_store::{Batch, EventKind, KeyValue, Op, Revision, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Every key under one prefix of one store, kept current by its watch.
#[derive(Debug)]
pub struct Mirror {
    prefix: String,
    inner: RwLock<Inner>,
    started: AtomicBool,
}

#[derive(Debug, Default)]
struct Inner {
    /// Loaded and following: only then is it served.
    live: bool,
    kvs: BTreeMap<String, KeyValue>,
    /// The revision of the last change the watch delivered.
    applied: Revision,
    /// The revision the last load read at (or after): the watch's changes up to it are held.
    read_at: Revision,
    /// Keys this server deleted ahead of the watch, with the revision that deleted them: the
    /// watch's older puts of them must not bring them back. Dropped once the watch passes.
    tombstones: BTreeMap<String, Revision>,
}

impl Mirror {
    pub fn new(prefix: &str) -> Self {
        Mirror {
            prefix: prefix.to_string(),
            inner: RwLock::new(Inner::default()),
            started: AtomicBool::new(false),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// `key` as last seen, if the mirror is live and holds it.
    pub fn get(&self, key: &str) -> Option<KeyValue> {
        let inner = self.read();
        inner.kvs.get(key).filter(|_| inner.live).cloned()
    }

    /// This server committed `ops` at `revision`: the mirror's keys among them take effect
    /// now, unless the watch already brought something newer.
    pub fn wrote(&self, revision: Revision, ops: &[Op]) {
        let mut inner = self.write();
        // Once the watch has delivered `revision`, it has delivered these changes too.
        if !inner.live || revision <= inner.applied {
            return;
        }
        for op in ops {
            let key = match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            };
            if !key.starts_with(&self.prefix) {
                continue;
            }
            if let Op::Delete { key } = op {
                inner.tombstones.insert(key.clone(), revision);
            }
            inner.change(op, revision, None);
        }
    }

    /// Applies one revision's changes from the watch (those under the mirror's prefix).
    pub fn apply(&self, batch: &Batch) {
        let mut inner = self.write();
        // A fresh read already holds what the watch delivers late.
        if batch.revision <= inner.read_at {
            return;
        }
        for e in batch
            .events
            .iter()
            .filter(|e| e.kv.key.starts_with(&self.prefix))
        {
            let op = match e.kind {
                EventKind::Put => Op::Put {
                    key: e.kv.key.clone(),
                    value: e.kv.value.clone(),
                },
                EventKind::Delete => Op::Delete {
                    key: e.kv.key.clone(),
                },
            };
            let created = (e.kind == EventKind::Put).then_some(e.kv.create_revision);
            inner.change(&op, e.kv.mod_revision, created);
        }
        let applied = inner.applied.max(batch.revision);
        inner.applied = applied;
        inner.tombstones.retain(|_, r| *r > applied);
    }

    /// Makes `kvs` (read at one revision, `at` or newer) the mirror's whole content, live.
    fn reset(&self, kvs: Vec<KeyValue>, at: Revision) {
        let mut inner = self.write();
        inner.kvs = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        inner.tombstones.clear();
        inner.applied = inner.applied.max(at);
        inner.read_at = at;
        inner.live = true;
    }

    /// Reads the mirror's keys from `store`, which is at revision `at` or newer: the
    /// changes of a watch from `at` are then applied as they come.
    pub async fn load(&self, store: &dyn Store, at: Revision) -> Result<(), StoreError> {
        let kvs = store.range(&self.prefix, None, None).await?;
        self.reset(kvs, at);
        Ok(())
    }

    /// Reads the mirror's keys afresh (after a wipe of the store), if it is live.
    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        if !self.is_live() {
            return Ok(());
        }
        let at = store.revision().await?;
        self.load(store, at).await
    }

    /// Whether it is loaded and following, so served.
    pub fn is_live(&self) -> bool {
        self.read().live
    }

    /// The revision of the last change the watch delivered (or of the last load).
    pub fn applied(&self) -> Revision {
        self.read().applied
    }

    /// Not served until loaded again: the watch feeding it broke.
    pub fn stale(&self) {
        self.write().live = false;
    }

    /// Loads the mirror and follows `store` with a watch of its own until `stop` says so, in
    /// a task of its own (the users' keys, at the store's root); only the first call starts
    /// one. The region's mirrors are loaded and fed by the cluster state's applier instead.
    pub fn start(self: &Arc<Self>, store: Arc<dyn Store>, stop: watch::Receiver<bool>) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move { me.run(store, stop).await });
    }

    /// Loads, follows; after a failure, waits a moment and loads again.
    async fn run(&self, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
        loop {
            match self.load_and_follow(&*store, &mut stop).await {
                Ok(()) => return,
                Err(e) => {
                    self.stale();
                    tracing::warn!(prefix = self.prefix, error = %e, "a mirror reloads");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// `Ok` when stopped; an error when the store fails or the watch breaks for good.
    async fn load_and_follow(
        &self,
        store: &dyn Store,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        // The watch starts at the revision the range is read at: nothing between is missed.
        let at = store.revision().await?;
        let mut w = store.watch(&self.prefix, at).await?;
        // The range may be newer than `at`: the watch's replay of the revisions between
        // changes nothing a key holds newer (a key put and deleted in between comes and goes
        // again as the replay passes).
        self.load(store, at).await?;
        loop {
            let next = tokio::select! {
                b = w.rx.recv() => b,
                _ = stop.wait_for(|s| *s) => return Ok(()),
            };
            match next {
                Some(Ok(batch)) => self.apply(&batch),
                Some(Err(e)) => return Err(e),
                None => return Err(StoreError::Backend("the mirror's watch ended".to_string())),
            }
        }
    }
}

impl Inner {
    /// Applies one change made at `revision`, unless what is held is as new.
    /// `created` is the key's create revision when the change says it (the watch's do); a
    /// change written through infers it from what the mirror holds, which may be wrong while
    /// the watch is behind (the key deleted and created again by another server meanwhile)
    /// until the watch delivers the same revision and corrects it.
    fn change(&mut self, op: &Op, revision: Revision, created: Option<Revision>) {
        let key = match op {
            Op::Put { key, .. } | Op::Delete { key } => key,
        };
        let held = self
            .kvs
            .get(key)
            .map(|kv| kv.mod_revision)
            .or_else(|| self.tombstones.get(key).copied());
        if held == Some(revision) {
            if let (Some(kv), Some(created)) = (self.kvs.get_mut(key), created) {
                kv.create_revision = created;
            }
            return;
        }
        if held.is_some_and(|r| r > revision) {
            return;
        }
        match op {
            Op::Put { key, value } => {
                let create_revision = created
                    .unwrap_or_else(|| self.kvs.get(key).map_or(revision, |kv| kv.create_revision));
                self.kvs.insert(
                    key.clone(),
                    KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: revision,
                    },
                );
            }
            Op::Delete { key } => {
                self.kvs.remove(key);
            }
        }
    }
}

/// The mirrors of one region, and of the users' keys every region shares.
#[derive(Debug, Clone)]
pub struct Mirrors {
    /// Users' access keys, at the store's root. Agents' keys are not mirrored: an agent's
    /// poll reads its key from the store, so a server cut off from the store fails it and
    /// the agent moves to one that can share its presence, instead of being handed plans
    /// from a state that no longer moves while the leader takes the agent for gone.
    pub users: Arc<Mirror>,
    pub task_definitions: Arc<Mirror>,
    /// Each family's last revision number.
    pub families: Arc<Mirror>,
}

impl Default for Mirrors {
    fn default() -> Self {
        Mirrors {
            users: Arc::new(Mirror::new(crate::keys::ACCESS_KEYS)),
            task_definitions: Arc::new(Mirror::new(crate::keys::TASK_DEFINITIONS)),
            families: Arc::new(Mirror::new(crate::keys::FAMILIES)),
        }
    }
}

impl Mirrors {
    /// The region's mirrors (not the users'), for writing through and reloading.
    pub fn regional(&self) -> [&Arc<Mirror>; 2] {
        [&self.task_definitions, &self.families]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::{Embedded, Txn, TxnOutcome};
    use proptest::prelude::*;

    /// One write: a put (`Some(value)`) or delete of key `k{key}`, under the mirror's prefix
    /// or beside it, written through to the mirror or left to the watch.
    #[derive(Debug, Clone)]
    struct Write {
        key: u8,
        inside: bool,
        value: Option<u8>,
        through: bool,
    }

    fn write() -> impl Strategy<Value = Write> {
        (
            0u8..4,
            any::<bool>(),
            proptest::option::of(any::<u8>()),
            any::<bool>(),
        )
            .prop_map(|(key, inside, value, through)| Write {
                key,
                inside,
                value,
                through,
            })
    }

    /// Waits (bounded) until the mirror has applied `revision`.
    async fn caught_up(m: &Mirror, revision: Revision) {
        for _ in 0..500 {
            if m.applied() >= revision {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the mirror never applied revision {revision}: at {}",
            m.applied()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Right after each write this server commits, the mirror serves exactly what the
        /// store holds for that key (read-your-writes), never an older value or a deleted
        /// key; once the watch has caught up, it holds exactly the store's keys under its
        /// prefix and none beside it.
        #[test]
        fn the_mirror_serves_what_the_store_holds(
            before in proptest::collection::vec(write(), 0..10),
            after in proptest::collection::vec(write(), 1..30),
        ) {
            crate::test_runtime().block_on(async {
                let store: Arc<dyn Store> = Arc::new(Embedded::in_memory().unwrap());
                let key = |w: &Write| match w.inside {
                    true => format!("auth/keys/k{}", w.key),
                    false => format!("auth/other/k{}", w.key),
                };
                let apply = |w: &Write| match w.value {
                    Some(v) => Txn::new().put(key(w), vec![v]),
                    None => Txn::new().delete(key(w)),
                };
                // Records written before the mirror starts are loaded.
                for w in &before {
                    store.txn(apply(w)).await.unwrap();
                }
                let m = Arc::new(Mirror::new("auth/keys/"));
                let (stop, rx) = watch::channel(false);
                m.start(store.clone(), rx);
                for w in &after {
                    let txn = apply(w);
                    let ops = txn.ops.clone();
                    let TxnOutcome::Committed(rev) = store.txn(txn).await.unwrap() else {
                        panic!("an unguarded write conflicted");
                    };
                    if w.through && m.is_live() {
                        m.wrote(rev, &ops);
                        let held = store.get(&key(w)).await.unwrap();
                        let served = m.get(&key(w));
                        if w.inside {
                            // The value and its revision; the create revision of a key written
                            // through is the watch's to settle.
                            let seen = |kv: Option<KeyValue>| kv.map(|kv| (kv.value, kv.mod_revision));
                            assert_eq!(seen(served), seen(held), "read-your-writes of {w:?}");
                        }
                    }
                }
                // A last write under the prefix (a delete of a missing key changes nothing, so
                // the watch has nothing to say of its revision) marks where the watch must be.
                let TxnOutcome::Committed(last) =
                    store.txn(Txn::new().put("auth/keys/zz", vec![1])).await.unwrap()
                else {
                    panic!("an unguarded write conflicted");
                };
                caught_up(&m, last).await;
                for k in 0..4u8 {
                    for inside in [true, false] {
                        let w = Write { key: k, inside, value: None, through: false };
                        let held = store.get(&key(&w)).await.unwrap();
                        let served = m.get(&key(&w));
                        match inside {
                            true => assert_eq!(served, held, "{} after the watch", key(&w)),
                            false => assert_eq!(served, None, "{} is not the mirror's", key(&w)),
                        }
                    }
                }
                stop.send_replace(true);
            });
        }
    }

    #[test]
    fn a_mirror_that_is_not_live_serves_nothing_and_takes_no_writes() {
        let m = Mirror::new("taskdefs/");
        let put = Op::Put {
            key: "taskdefs/a#0000000001".into(),
            value: b"{}".to_vec(),
        };
        m.wrote(5, std::slice::from_ref(&put));
        assert_eq!(
            m.get("taskdefs/a#0000000001"),
            None,
            "not loaded: not served"
        );
        m.reset(Vec::new(), 4);
        m.wrote(5, std::slice::from_ref(&put));
        assert!(
            m.get("taskdefs/a#0000000001").is_some(),
            "loaded: written through"
        );
        m.stale();
        assert_eq!(
            m.get("taskdefs/a#0000000001"),
            None,
            "a broken watch: not served"
        );
    }

    #[test]
    fn a_late_write_through_never_undoes_what_the_watch_brought() {
        let m = Mirror::new("auth/keys/");
        m.reset(Vec::new(), 1);
        let key = "auth/keys/A".to_string();
        // The watch brings the put at 5 and the delete at 7; this server's write-through of
        // the put at 5 comes after both.
        m.apply(&Batch {
            revision: 5,
            events: vec![berth_store::Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.clone(),
                    value: b"1".to_vec(),
                    create_revision: 5,
                    mod_revision: 5,
                },
            }],
        });
        m.apply(&Batch {
            revision: 7,
            events: vec![berth_store::Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key.clone(),
                    value: Vec::new(),
                    create_revision: 0,
                    mod_revision: 7,
                },
            }],
        });
        m.wrote(
            5,
            &[Op::Put {
                key: key.clone(),
                value: b"1".to_vec(),
            }],
        );
        assert_eq!(m.get(&key), None, "a revoked key stays revoked");
        // This server deletes at 9 before the watch brings an older put at 8.
        m.wrote(9, &[Op::Delete { key: key.clone() }]);
        m.apply(&Batch {
            revision: 8,
            events: vec![berth_store::Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.clone(),
                    value: b"2".to_vec(),
                    create_revision: 8,
                    mod_revision: 8,
                },
            }],
        });
        assert_eq!(m.get(&key), None, "the delete at 9 outranks the put at 8");
    }
}
