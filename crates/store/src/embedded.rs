//! The embedded backend: one redb file.
//!
//! redb is a pure-Rust, copy-on-write B-tree with ACID transactions whose default durability
//! fsyncs every commit, so an acknowledged write survives `kill -9` and power loss. Writes are
//! serialized by redb's single writer, which is exactly the compare-and-swap point we need.

use crate::{
    Compare, Event, EventKind, KeyValue, Op, Revision, Store, StoreError, Txn, TxnOutcome, Watch,
};
use async_trait::async_trait;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

/// key → (create_revision, mod_revision, value)
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// "revision" → the store's revision
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// revision → the events of that revision, for watches
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

/// How many revisions of history watches can replay.
const LOG_KEEP: u64 = 100_000;

#[derive(Clone)]
pub struct Embedded {
    db: Arc<Database>,
    live: broadcast::Sender<Arc<(Revision, Vec<Event>)>>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").finish_non_exhaustive()
    }
}

fn backend(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(e.into().to_string())
}

fn encode_kv(create: Revision, modified: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modified.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_kv(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    if raw.len() < 16 {
        return Err(StoreError::Codec {
            key: key.into(),
            message: format!("record of {} bytes is truncated", raw.len()),
        });
    }
    let create = u64::from_le_bytes(
        raw[0..8]
            .try_into()
            .map_err(|_| StoreError::Backend("slice".into()))?,
    );
    let modified = u64::from_le_bytes(
        raw[8..16]
            .try_into()
            .map_err(|_| StoreError::Backend("slice".into()))?,
    );
    Ok(KeyValue {
        key: key.into(),
        value: raw[16..].to_vec(),
        create_revision: create,
        mod_revision: modified,
    })
}

/// Log entries: a sequence of (kind u8, key len u32, key, value len u32, value, create u64).
fn encode_events(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.push(match e.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        for part in [e.kv.key.as_bytes(), e.kv.value.as_slice()] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
        out.extend_from_slice(&e.kv.create_revision.to_le_bytes());
    }
    out
}

fn decode_events(rev: Revision, mut raw: &[u8]) -> Result<Vec<Event>, StoreError> {
    let corrupt = || StoreError::Codec {
        key: format!("log/{rev}"),
        message: "corrupt log entry".into(),
    };
    let take = |n: usize, raw: &mut &[u8]| -> Result<Vec<u8>, StoreError> {
        if raw.len() < n {
            return Err(corrupt());
        }
        let (a, b) = raw.split_at(n);
        *raw = b;
        Ok(a.to_vec())
    };
    let mut out = Vec::new();
    while !raw.is_empty() {
        let kind = if take(1, &mut raw)?[0] == 0 {
            EventKind::Put
        } else {
            EventKind::Delete
        };
        let mut parts = Vec::new();
        for _ in 0..2 {
            let len =
                u32::from_le_bytes(take(4, &mut raw)?.try_into().map_err(|_| corrupt())?) as usize;
            parts.push(take(len, &mut raw)?);
        }
        let create = u64::from_le_bytes(take(8, &mut raw)?.try_into().map_err(|_| corrupt())?);
        let value = parts.pop().unwrap_or_default();
        let key = String::from_utf8(parts.pop().unwrap_or_default()).map_err(|_| corrupt())?;
        out.push(Event {
            kind,
            kv: KeyValue {
                key,
                value,
                create_revision: create,
                mod_revision: rev,
            },
        });
    }
    Ok(out)
}

impl Embedded {
    /// Opens (or creates) the store file at `path`. Fails if another process has it open.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        Self::init(db)
    }

    /// The same store on memory: nothing survives the process. For tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(backend)?;
        Self::init(db)
    }

    fn init(db: Database) -> Result<Self, StoreError> {
        let w = db.begin_write().map_err(backend)?;
        {
            w.open_table(KV).map_err(backend)?;
            w.open_table(META).map_err(backend)?;
            w.open_table(LOG).map_err(backend)?;
        }
        w.commit().map_err(backend)?;
        let (live, _) = broadcast::channel(4096);
        Ok(Embedded {
            db: Arc::new(db),
            live,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Backend(format!("store worker: {e}")))?
    }

    fn apply(db: &Database, txn: Txn) -> Result<(TxnOutcome, Vec<Event>), StoreError> {
        let w = db.begin_write().map_err(backend)?;
        let (rev, events) = {
            let mut kv = w.open_table(KV).map_err(backend)?;
            for c in &txn.compares {
                let ok = match c {
                    Compare::Absent(k) => kv.get(k.as_str()).map_err(backend)?.is_none(),
                    Compare::ModRevision(k, r) => match kv.get(k.as_str()).map_err(backend)? {
                        Some(v) => decode_kv(k, v.value())?.mod_revision == *r,
                        None => false,
                    },
                };
                if !ok {
                    drop(kv);
                    w.abort().map_err(backend)?;
                    return Ok((TxnOutcome::Conflict, Vec::new()));
                }
            }
            let mut meta = w.open_table(META).map_err(backend)?;
            let current = meta
                .get("revision")
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0);
            let rev = current + 1;
            let mut events = Vec::with_capacity(txn.ops.len());
            for op in txn.ops {
                match op {
                    Op::Put { key, value } => {
                        let create = match kv.get(key.as_str()).map_err(backend)? {
                            Some(v) => decode_kv(&key, v.value())?.create_revision,
                            None => rev,
                        };
                        kv.insert(key.as_str(), encode_kv(create, rev, &value).as_slice())
                            .map_err(backend)?;
                        events.push(Event {
                            kind: EventKind::Put,
                            kv: KeyValue {
                                key,
                                value,
                                create_revision: create,
                                mod_revision: rev,
                            },
                        });
                    }
                    Op::Delete { key } => {
                        if let Some(old) = kv.remove(key.as_str()).map_err(backend)? {
                            let create = decode_kv(&key, old.value())?.create_revision;
                            events.push(Event {
                                kind: EventKind::Delete,
                                kv: KeyValue {
                                    key,
                                    value: Vec::new(),
                                    create_revision: create,
                                    mod_revision: rev,
                                },
                            });
                        }
                    }
                }
            }
            meta.insert("revision", rev).map_err(backend)?;
            let mut log = w.open_table(LOG).map_err(backend)?;
            log.insert(rev, encode_events(&events).as_slice())
                .map_err(backend)?;
            if rev > LOG_KEEP {
                // Compaction: one old entry out for each new one in.
                log.remove(rev - LOG_KEEP).map_err(backend)?;
            }
            (rev, events)
        };
        w.commit().map_err(backend)?;
        Ok((TxnOutcome::Committed(rev), events))
    }

    fn history(
        db: &Database,
        prefix: &str,
        after: Revision,
    ) -> Result<(Revision, Vec<Event>), StoreError> {
        let r = db.begin_read().map_err(backend)?;
        let meta = r.open_table(META).map_err(backend)?;
        let current = meta
            .get("revision")
            .map_err(backend)?
            .map(|v| v.value())
            .unwrap_or(0);
        let log = r.open_table(LOG).map_err(backend)?;
        let oldest = log
            .first()
            .map_err(backend)?
            .map(|(k, _)| k.value())
            .unwrap_or(current + 1);
        if after + 1 < oldest && after < current && log.len().map_err(backend)? > 0 {
            return Err(StoreError::Compacted {
                requested: after + 1,
                oldest,
            });
        }
        let mut out = Vec::new();
        for entry in log.range(after + 1..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            out.extend(
                decode_events(k.value(), v.value())?
                    .into_iter()
                    .filter(|e| e.kv.key.starts_with(prefix)),
            );
        }
        Ok((current, out))
    }
}

#[async_trait]
impl Store for Embedded {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.blocking(move |db| {
            let r = db.begin_read().map_err(backend)?;
            let t = r.open_table(KV).map_err(backend)?;
            let v = t.get(key.as_str()).map_err(backend)?;
            v.map(|v| decode_kv(&key, v.value())).transpose()
        })
        .await
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let prefix = prefix.to_string();
        let start_after = start_after.map(str::to_string);
        self.blocking(move |db| {
            let r = db.begin_read().map_err(backend)?;
            let t = r.open_table(KV).map_err(backend)?;
            let start = match &start_after {
                Some(s) if s.as_str() >= prefix.as_str() => s.clone(),
                _ => prefix.clone(),
            };
            let mut out = Vec::new();
            for entry in t.range(start.as_str()..).map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                let k = k.value();
                if !k.starts_with(&prefix) {
                    break;
                }
                if start_after.as_deref() == Some(k) {
                    continue;
                }
                out.push(decode_kv(k, v.value())?);
                if limit.is_some_and(|l| out.len() >= l) {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let live = self.live.clone();
        self.blocking(move |db| {
            let (outcome, events) = Self::apply(db, txn)?;
            if let TxnOutcome::Committed(rev) = outcome {
                // Sent while still on the writer's thread, so live events keep revision order.
                let _ = live.send(Arc::new((rev, events)));
            }
            Ok(outcome)
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        // Subscribe before reading history so nothing falls between the two.
        let mut live = self.live.subscribe();
        let p = prefix.to_string();
        let (upto, history) = self
            .blocking(move |db| Self::history(db, &p, after))
            .await?;
        let (tx, rx) = mpsc::channel(1024);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            for e in history {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(batch) => {
                        let (rev, events) = &*batch;
                        if *rev <= upto {
                            continue;
                        }
                        for e in events.iter().filter(|e| e.kv.key.starts_with(&prefix)) {
                            if tx.send(Ok(e.clone())).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Err(StoreError::Lagged)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Watch { rx })
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.blocking(|db| {
            let r = db.begin_read().map_err(backend)?;
            let meta = r.open_table(META).map_err(backend)?;
            Ok(meta
                .get("revision")
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0))
        })
        .await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let keys = self.range(prefix, None, None).await?;
        let n = keys.len();
        if n == 0 {
            return Ok(0);
        }
        let txn = keys.into_iter().fold(Txn::new(), |t, kv| t.delete(kv.key));
        self.txn(txn).await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn cas_and_revisions() {
        rt().block_on(async {
            let s = Embedded::in_memory().unwrap();
            assert_eq!(
                s.txn(Txn::new().put("a", b"1".to_vec())).await.unwrap(),
                TxnOutcome::Committed(1)
            );
            let a = s.get("a").await.unwrap().unwrap();
            assert_eq!((a.create_revision, a.mod_revision), (1, 1));
            // A stale read-modify-write loses.
            s.txn(Txn::new().unchanged("a", Some(&a)).put("a", b"2".to_vec()))
                .await
                .unwrap();
            let stale = Txn::new().unchanged("a", Some(&a)).put("a", b"3".to_vec());
            assert_eq!(s.txn(stale).await.unwrap(), TxnOutcome::Conflict);
            let a2 = s.get("a").await.unwrap().unwrap();
            assert_eq!(
                (a2.value.as_slice(), a2.create_revision, a2.mod_revision),
                (&b"2"[..], 1, 2)
            );
            // Absent guards creation.
            assert_eq!(
                s.txn(Txn::new().unchanged("a", None).put("a", vec![]))
                    .await
                    .unwrap(),
                TxnOutcome::Conflict
            );
            assert_eq!(
                s.revision().await.unwrap(),
                2,
                "a conflict does not bump the revision"
            );
        });
    }

    #[test]
    fn range_with_prefix_and_pagination() {
        rt().block_on(async {
            let s = Embedded::in_memory().unwrap();
            let t = ["p/a", "p/b", "p/c", "q/a"]
                .iter()
                .fold(Txn::new(), |t, k| t.put(*k, k.as_bytes().to_vec()));
            s.txn(t).await.unwrap();
            let keys = |v: Vec<KeyValue>| v.into_iter().map(|kv| kv.key).collect::<Vec<_>>();
            assert_eq!(
                keys(s.range("p/", None, None).await.unwrap()),
                ["p/a", "p/b", "p/c"]
            );
            assert_eq!(
                keys(s.range("p/", Some("p/a"), Some(1)).await.unwrap()),
                ["p/b"]
            );
            assert_eq!(
                keys(s.range("p/", Some("p/c"), None).await.unwrap()),
                Vec::<String>::new()
            );
            assert_eq!(s.delete_prefix("p/").await.unwrap(), 3);
            assert_eq!(keys(s.range("", None, None).await.unwrap()), ["q/a"]);
        });
    }

    #[test]
    fn watch_replays_history_then_follows_live() {
        rt().block_on(async {
            let s = Embedded::in_memory().unwrap();
            s.txn(Txn::new().put("w/1", b"a".to_vec())).await.unwrap();
            s.txn(Txn::new().put("x/1", b"b".to_vec())).await.unwrap();
            let mut w = s.watch("w/", 0).await.unwrap();
            s.txn(Txn::new().delete("w/1")).await.unwrap();
            s.txn(Txn::new().put("w/2", b"c".to_vec())).await.unwrap();
            let mut seen = Vec::new();
            for _ in 0..3 {
                let e = tokio::time::timeout(Duration::from_secs(5), w.rx.recv())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                seen.push((e.kind, e.kv.key, e.kv.mod_revision));
            }
            assert_eq!(
                seen,
                [
                    (EventKind::Put, "w/1".to_string(), 1),
                    (EventKind::Delete, "w/1".to_string(), 3),
                    (EventKind::Put, "w/2".to_string(), 4)
                ]
            );
        });
    }

    #[test]
    fn durable_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        rt().block_on(async {
            let s = Embedded::open(&path).unwrap();
            s.txn(Txn::new().put("k", b"v".to_vec())).await.unwrap();
        });
        rt().block_on(async {
            let s = Embedded::open(&path).unwrap();
            assert_eq!(s.get("k").await.unwrap().unwrap().value, b"v");
            assert_eq!(s.revision().await.unwrap(), 1);
        });
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        #[derive(Debug, Clone)]
        enum Step {
            Put(u8, u8),
            Delete(u8),
            CasPut(u8, u8, bool),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                (0u8..6, any::<u8>()).prop_map(|(k, v)| Step::Put(k, v)),
                (0u8..6).prop_map(Step::Delete),
                (0u8..6, any::<u8>(), any::<bool>())
                    .prop_map(|(k, v, fresh)| Step::CasPut(k, v, fresh)),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]
            /// Every acknowledged write is what a later read sees, exactly as a plain map would
            /// have it; conflicts change nothing.
            #[test]
            fn behaves_like_a_map(steps in proptest::collection::vec(step(), 1..40)) {
                rt().block_on(async {
                    let s = Embedded::in_memory().unwrap();
                    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                    for st in steps {
                        match st {
                            Step::Put(k, v) => {
                                s.txn(Txn::new().put(format!("k{k}"), vec![v])).await.unwrap();
                                model.insert(format!("k{k}"), vec![v]);
                            }
                            Step::Delete(k) => {
                                s.txn(Txn::new().delete(format!("k{k}"))).await.unwrap();
                                model.remove(&format!("k{k}"));
                            }
                            Step::CasPut(k, v, fresh) => {
                                let key = format!("k{k}");
                                let seen = s.get(&key).await.unwrap();
                                let mut t = Txn::new().unchanged(&key, seen.as_ref()).put(key.clone(), vec![v]);
                                if !fresh {
                                    // Someone else writes in between: the CAS must lose.
                                    s.txn(Txn::new().put(key.clone(), vec![0])).await.unwrap();
                                    model.insert(key.clone(), vec![0]);
                                    t = Txn::new().unchanged(&key, seen.as_ref()).put(key.clone(), vec![v]);
                                    assert_eq!(s.txn(t).await.unwrap(), TxnOutcome::Conflict);
                                } else {
                                    assert!(matches!(s.txn(t).await.unwrap(), TxnOutcome::Committed(_)));
                                    model.insert(key, vec![v]);
                                }
                            }
                        }
                    }
                    let all = s.range("", None, None).await.unwrap();
                    let got: BTreeMap<String, Vec<u8>> = all.into_iter().map(|kv| (kv.key, kv.value)).collect();
                    assert_eq!(got, model);
                });
            }
        }
    }
}
