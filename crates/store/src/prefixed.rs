//! One store seen through a key prefix: what one region's handlers use, so every region keeps
//! its records apart in the one store (and the one revision counter) the server has.

use crate::{Batch, Compare, Event, KeyValue, Op, Revision, Store, StoreError, Txn, TxnOutcome};
use crate::{Watch, WATCH_QUEUE};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::mpsc;

/// `inner` with every key under `prefix`: reads see only those keys, with the prefix taken
/// off; writes and compares put it on. Transactions stay atomic (they are the inner store's).
#[derive(Debug, Clone)]
pub struct Prefixed {
    inner: Arc<dyn Store>,
    prefix: String,
}

impl Prefixed {
    /// `prefix` should end with a separator (`regions/eu-west-1/`), so no view holds another's
    /// keys.
    pub fn new(inner: Arc<dyn Store>, prefix: impl Into<String>) -> Self {
        Prefixed {
            inner,
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn strip(&self, mut kv: KeyValue) -> KeyValue {
        kv.key = kv.key.split_off(self.prefix.len());
        kv
    }
}

#[async_trait]
impl Store for Prefixed {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self
            .inner
            .get(&self.full(key))
            .await?
            .map(|kv| self.strip(kv)))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, StoreError> {
        let full: Vec<String> = keys.iter().map(|k| self.full(k)).collect();
        Ok(self
            .inner
            .get_many(&full)
            .await?
            .into_iter()
            .map(|kv| kv.map(|kv| self.strip(kv)))
            .collect())
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let after = start_after.map(|k| self.full(k));
        Ok(self
            .inner
            .range(&self.full(prefix), after.as_deref(), limit)
            .await?
            .into_iter()
            .map(|kv| self.strip(kv))
            .collect())
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let compares = txn
            .compares
            .into_iter()
            .map(|c| match c {
                Compare::Absent(k) => Compare::Absent(self.full(&k)),
                Compare::ModRevision(k, r) => Compare::ModRevision(self.full(&k), r),
            })
            .collect();
        let ops = txn
            .ops
            .into_iter()
            .map(|o| match o {
                Op::Put { key, value } => Op::Put {
                    key: self.full(&key),
                    value,
                },
                Op::Delete { key } => Op::Delete {
                    key: self.full(&key),
                },
            })
            .collect();
        self.inner.txn(Txn { compares, ops }).await
    }

    /// Every revision of the whole store arrives, as a batch of this view's changes under
    /// `prefix` — empty when it made none here — so a watcher knows how far it has seen even
    /// while other views are the ones writing (etcd's progress notifications).
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        let mut inner = self.inner.watch("", after).await?;
        let wanted = self.full(prefix);
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let cut = self.prefix.len();
        // Holds no handle on the store, and ends as soon as the watcher goes, so a dropped
        // watch never keeps the store open.
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    item = inner.rx.recv() => item,
                    _ = tx.closed() => return,
                };
                let Some(item) = item else { return };
                let item = item.map(|b| {
                    Arc::new(Batch {
                        revision: b.revision,
                        events: b
                            .events
                            .iter()
                            .filter(|e| e.kv.key.starts_with(&wanted))
                            .map(|e| {
                                let mut kv = e.kv.clone();
                                kv.key = kv.key.split_off(cut);
                                Event { kind: e.kind, kv }
                            })
                            .collect(),
                    })
                });
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(Watch { rx })
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        self.inner.delete_prefix(&self.full(prefix)).await
    }

    /// The inner store's leases: their keys are the inner store's, not this view's.
    fn leases(&self) -> Option<&dyn crate::Leases> {
        self.inner.leases()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Embedded, EventKind};

    fn views() -> (Arc<dyn Store>, Prefixed, Prefixed) {
        let root: Arc<dyn Store> = Arc::new(Embedded::in_memory().expect("an in-memory store"));
        let a = Prefixed::new(root.clone(), "regions/eu-west-1/");
        let b = Prefixed::new(root.clone(), "regions/eu-west-10/");
        (root, a, b)
    }

    #[tokio::test]
    async fn each_view_reads_and_writes_only_its_own_keys() {
        let (root, a, b) = views();
        a.txn(Txn::new().put("clusters/x", b"a".to_vec()))
            .await
            .unwrap();
        b.txn(Txn::new().put("clusters/x", b"b".to_vec()))
            .await
            .unwrap();
        let got = a.get("clusters/x").await.unwrap().expect("a's own record");
        assert_eq!(
            (got.key.as_str(), got.value.as_slice()),
            ("clusters/x", &b"a"[..])
        );
        let listed = a.range("clusters/", None, None).await.unwrap();
        assert_eq!(
            listed.len(),
            1,
            "eu-west-1 must not list eu-west-10's keys: {listed:?}"
        );
        assert_eq!(listed[0].value, b"a");
        assert!(
            root.get("clusters/x").await.unwrap().is_none(),
            "nothing is written outside the prefix"
        );
        let many = b
            .get_many(&["clusters/x".into(), "clusters/y".into()])
            .await
            .unwrap();
        assert_eq!(
            many[0].as_ref().map(|kv| kv.value.clone()),
            Some(b"b".to_vec())
        );
        assert!(many[1].is_none());
        assert_eq!(a.delete_prefix("clusters/").await.unwrap(), 1);
        assert!(
            b.get("clusters/x").await.unwrap().is_some(),
            "b's record survives a's delete"
        );
    }

    #[tokio::test]
    async fn compares_and_paging_use_the_view_keys() {
        let (_root, a, _b) = views();
        let seen = a.get("k").await.unwrap();
        assert_eq!(
            a.txn(Txn::new().unchanged("k", seen.as_ref()).put("k", vec![1]))
                .await
                .unwrap(),
            TxnOutcome::Committed(1)
        );
        assert_eq!(
            a.txn(Txn::new().unchanged("k", None).put("k", vec![2]))
                .await
                .unwrap(),
            TxnOutcome::Conflict,
            "the key exists, so an Absent compare fails"
        );
        for k in ["p/1", "p/2", "p/3"] {
            a.txn(Txn::new().put(k, vec![])).await.unwrap();
        }
        let page = a.range("p/", Some("p/1"), Some(1)).await.unwrap();
        assert_eq!(
            page.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
            ["p/2"]
        );
    }

    #[tokio::test]
    async fn a_dropped_watch_leaves_no_handle_on_the_store() {
        let root: Arc<dyn Store> = Arc::new(Embedded::in_memory().expect("an in-memory store"));
        let a = Prefixed::new(root.clone(), "regions/eu-west-1/");
        let w = a.watch("", 0).await.unwrap();
        drop((w, a));
        for _ in 0..100 {
            if Arc::strong_count(&root) == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "a dropped watch still holds the store ({} handles), which then never closes",
            Arc::strong_count(&root)
        );
    }

    #[tokio::test]
    async fn a_watch_sees_its_own_changes_without_the_prefix() {
        let (_root, a, b) = views();
        let mut w = a.watch("", 0).await.unwrap();
        b.txn(Txn::new().put("x", vec![])).await.unwrap();
        a.txn(Txn::new().put("x", vec![]).put("y", vec![]))
            .await
            .unwrap();
        a.txn(Txn::new().delete("x")).await.unwrap();
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), w.rx.recv())
            .await
            .expect("a batch within 5 s")
            .expect("an open watch")
            .unwrap();
        assert_eq!(first.revision, 1, "b's write arrives as progress");
        assert!(first.events.is_empty(), "b's write is not a's: {first:?}");
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), w.rx.recv())
            .await
            .expect("a batch within 5 s")
            .expect("an open watch")
            .unwrap();
        assert_eq!(next.revision, 2);
        let keys: Vec<&str> = next.events.iter().map(|e| e.kv.key.as_str()).collect();
        assert_eq!(keys, ["x", "y"]);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), w.rx.recv())
            .await
            .expect("a batch within 5 s")
            .expect("an open watch")
            .unwrap();
        assert_eq!(second.events[0].kind, EventKind::Delete);
        assert_eq!(second.events[0].kv.key, "x");
    }
}
