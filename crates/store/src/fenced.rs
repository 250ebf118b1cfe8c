//! Fenced writes: a store whose transactions, when made inside [`fence`], also require the
//! leadership key to be unchanged since the leader won it. A leader that lost its lease (its
//! key deleted, perhaps re-created by another server) and wakes up late cannot write: its
//! transaction's compare fails, and the caller gets [`StoreError::Deposed`], not a conflict
//! to retry. Writes made outside [`fence`] (API requests, which any server serves) are not
//! fenced.
//!
//! The fence travels with the task (a tokio task-local), so every write a reconciler pass
//! makes, however deep, carries it; work it hands to another task does not.

use crate::{Compare, KeyValue, Leases, Revision, Store, StoreError, Txn, TxnOutcome, Watch};
use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static FENCE: Revision;
}

/// Runs `f` with its writes fenced on the leadership key created at `revision`.
pub async fn fence<F: Future>(revision: Revision, f: F) -> F::Output {
    FENCE.scope(revision, f).await
}

/// `inner`, fencing the transactions made inside [`fence`] on `key`.
#[derive(Debug, Clone)]
pub struct Fenced {
    inner: Arc<dyn Store>,
    key: String,
}

impl Fenced {
    pub fn new(inner: Arc<dyn Store>, key: impl Into<String>) -> Self {
        Fenced {
            inner,
            key: key.into(),
        }
    }
}

#[async_trait]
impl Store for Fenced {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, StoreError> {
        self.inner.get_many(keys).await
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.range(prefix, start_after, limit).await
    }

    async fn txn(&self, mut txn: Txn) -> Result<TxnOutcome, StoreError> {
        let Ok(at) = FENCE.try_with(|r| *r) else {
            return self.inner.txn(txn).await;
        };
        txn.compares
            .push(Compare::ModRevision(self.key.clone(), at));
        match self.inner.txn(txn).await? {
            TxnOutcome::Conflict => {
                // The fence, or the caller's own compares? Only the first ends the caller.
                let held = self.inner.get(&self.key).await?;
                if held.is_some_and(|kv| kv.mod_revision == at) {
                    Ok(TxnOutcome::Conflict)
                } else {
                    Err(StoreError::Deposed {
                        key: self.key.clone(),
                    })
                }
            }
            done => Ok(done),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        self.inner.watch(prefix, after).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        if FENCE.try_with(|_| ()).is_ok() {
            // A range delete cannot carry a compare: a leader's pass never makes one.
            return Err(StoreError::Backend(
                "a fenced writer cannot delete a prefix".into(),
            ));
        }
        self.inner.delete_prefix(prefix).await
    }

    fn leases(&self) -> Option<&dyn Leases> {
        self.inner.leases()
    }
}
