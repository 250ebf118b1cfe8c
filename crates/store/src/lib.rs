//! Berth's state store: etcd's data model behind one trait, so the control plane never knows
//! which backend holds its state.
//!
//! - Every write bumps one store-wide [`Revision`]; each key remembers the revision that created
//!   it and the one that last changed it.
//! - [`Store::txn`] is compare-and-swap over a few keys: all compares hold, then all ops apply
//!   atomically, or nothing does.
//! - [`Store::watch`] replays changes under a prefix from a revision, then follows live ones.
//!
//! [`Embedded`] is the durable single-file backend (redb); [`Embedded::in_memory`] is the same
//! code on memory, for fast tests. [`Etcd`] keeps the same model on an etcd cluster.

mod embedded;
mod etcd;
mod etcd_rpc;
mod fenced;
pub mod local_etcd;
mod prefixed;
pub use embedded::Embedded;
pub use etcd::{Etcd, EtcdOptions, EtcdTls};
pub use fenced::{fence, Fenced};
pub use prefixed::Prefixed;

/// How many batches a watcher may have waiting before it is told it [`StoreError::Lagged`].
pub(crate) const WATCH_QUEUE: usize = 64;

use async_trait::async_trait;
use std::fmt::Debug;
use tokio::sync::mpsc;

/// A store-wide, strictly increasing write counter.
pub type Revision = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// A condition a transaction checks before it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key exists and was last changed at this revision.
    ModRevision(String, Revision),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// Compare-and-swap over a few keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Txn::default()
    }

    pub fn when(mut self, c: Compare) -> Self {
        self.compares.push(c);
        self
    }

    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
        });
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Writes `value` over the record `seen`, provided nobody changed it since it was read.
    pub fn replace(self, seen: &KeyValue, value: Vec<u8>) -> Self {
        self.unchanged(&seen.key, Some(seen))
            .put(seen.key.clone(), value)
    }

    /// Guards a read-modify-write of `key` seen at `seen` (`None`: seen absent).
    pub fn unchanged(self, key: &str, seen: Option<&KeyValue>) -> Self {
        match seen {
            Some(kv) => self.when(Compare::ModRevision(key.to_string(), kv.mod_revision)),
            None => self.when(Compare::Absent(key.to_string())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Applied; the store is now at this revision.
    Committed(Revision),
    /// A compare failed; nothing changed.
    Conflict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change, as a watch reports it. For deletes `value` is empty and `mod_revision` is the
/// revision of the delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// The changes one revision made under a watched prefix: a transaction's events arrive
/// together, so a watcher never sees half of one. Never empty from a backend; a [`Prefixed`]
/// view also sends empty ones, for revisions that changed nothing it holds (progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub revision: Revision,
    pub events: Vec<Event>,
}

/// A stream of changes under a prefix, one [`Batch`] per revision, in revision order.
#[derive(Debug)]
pub struct Watch {
    /// Shared with every other watcher of the same revision when all its events match.
    pub rx: mpsc::Receiver<Result<std::sync::Arc<Batch>, StoreError>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption, a lock held by another process).
    #[error("store backend: {0}")]
    Backend(String),
    /// A watch asked for history that compaction has discarded.
    #[error("revision {requested} has been compacted; the oldest kept is {oldest}")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    /// A watcher fell too far behind the live stream and must re-read.
    #[error("watcher fell behind the live stream")]
    Lagged,
    /// A stored record could not be encoded or decoded.
    #[error("stored record {key}: {message}")]
    Codec { key: String, message: String },
    /// A write fenced by a leadership (see [`Fenced`]) was refused: the writer no longer
    /// leads.
    #[error("this server no longer leads (its lease on {key} is gone); the write was refused")]
    Deposed { key: String },
}

/// An etcd lease's id.
pub type LeaseId = i64;

/// etcd's leases: keys that go when the lease they are attached to is not kept alive. What
/// several servers on one store elect their leader with.
#[async_trait]
pub trait Leases: Send + Sync + Debug {
    /// A lease that lives `ttl` unless kept alive.
    async fn grant(&self, ttl: std::time::Duration) -> Result<LeaseId, StoreError>;
    /// Renews the lease for its whole TTL; `false` once it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, StoreError>;
    /// Ends the lease now, deleting its keys.
    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// Creates `key` attached to `lease` if it is absent: the revision it was created at, or
    /// `None` if it exists.
    async fn create_leased(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> Result<Option<Revision>, StoreError>;
}

/// The state store every Berth server reads and writes.
#[async_trait]
pub trait Store: Send + Sync + Debug {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Several keys at once, from one consistent view; `None` where a key is absent.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }
    /// Keys starting with `prefix`, in key order, strictly after `start_after` if given, at most
    /// `limit` of them if given.
    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<KeyValue>, StoreError>;
    /// Applies `txn` atomically; `Committed` only once it is durable. A transaction that
    /// changes nothing (no ops, or deletes of absent keys) does not take a revision.
    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError>;
    /// Changes under `prefix` with revision greater than `after`, then live ones, a batch
    /// per revision.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError>;
    /// The store's current revision.
    async fn revision(&self) -> Result<Revision, StoreError>;
    /// Deletes every key under `prefix` in one revision; returns how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError>;
    /// The store's leases, when several servers can share it (etcd); `None` for a store only
    /// one server opens (the embedded one locks its file), whose server always leads.
    fn leases(&self) -> Option<&dyn Leases> {
        None
    }
}
