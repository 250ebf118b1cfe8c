//! The embedded backend: one redb file.
//!
//! redb is a pure-Rust, copy-on-write B-tree with ACID transactions whose default durability
//! fsyncs every commit, so an acknowledged write survives `kill -9` and power loss.
//!
//! Writes go through one writer thread that commits in groups: it takes every transaction
//! waiting (up to [`GROUP_MAX`]), applies them one after the other inside one redb write
//! transaction (each checks its compares against the state the ones before it left, so the
//! outcome is exactly that of running them one by one), commits once — one fsync for the
//! group — and only then answers each caller and publishes the group's changes to watchers.
//! Nothing is acknowledged or visible before it is durable; concurrent writers share the fsync.

use crate::{
    Batch, Compare, Event, EventKind, KeyValue, Op, Revision, Store, StoreError, Txn, TxnOutcome,
    Watch,
};
use async_trait::async_trait;
use redb::{Database, ReadableTable, ReadableTableMetadata, Table, TableDefinition};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};

/// key → (create_revision, mod_revision, value)
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// "revision" → the store's revision
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// revision → the events of that revision, for watches
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

/// How many revisions of history watches can replay.
const LOG_KEEP: u64 = 100_000;

/// Revisions a watcher may fall behind the writer before it is told to re-read.
const LIVE_BACKLOG: usize = 1024;

use crate::WATCH_QUEUE;

/// The most transactions one group commit takes.
const GROUP_MAX: usize = 1024;

/// A transaction waiting for the writer, and where its outcome goes.
struct Pending {
    txn: Txn,
    reply: oneshot::Sender<Result<TxnOutcome, StoreError>>,
}

#[derive(Clone)]
pub struct Embedded {
    db: Arc<Database>,
    live: broadcast::Sender<Arc<Batch>>,
    writer: Arc<Writer>,
}

/// The writer thread's queue and handle. Dropping the last store handle closes the queue and
/// waits for the thread, so the file is closed when the drop returns.
struct Writer {
    queue: Option<mpsc::UnboundedSender<Pending>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
        // A watcher this far behind the writer must re-read (a placement's batch can be
        // megabytes: the backlog is memory).
        let (live, _) = broadcast::channel(LIVE_BACKLOG);
        let db = Arc::new(db);
        let (queue, rx) = mpsc::unbounded_channel();
        let thread = {
            let (db, live) = (db.clone(), live.clone());
            std::thread::Builder::new()
                .name("berth-store-writer".into())
                .spawn(move || Self::write_loop(db, rx, &live))
                .map_err(|e| StoreError::Backend(format!("starting the writer thread: {e}")))?
        };
        let writer = Arc::new(Writer {
            queue: Some(queue),
            thread: Some(thread),
        });
        Ok(Embedded { db, live, writer })
    }

    /// The writer thread: one group commit per turn, until every handle is gone.
    fn write_loop(
        db: Arc<Database>,
        mut queue: mpsc::UnboundedReceiver<Pending>,
        live: &broadcast::Sender<Arc<Batch>>,
    ) {
        while let Some(first) = queue.blocking_recv() {
            let mut group = vec![first];
            while group.len() < GROUP_MAX {
                match queue.try_recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
            let (txns, replies): (Vec<Txn>, Vec<_>) =
                group.into_iter().map(|p| (p.txn, p.reply)).unzip();
            match Self::apply_group(&db, txns) {
                Ok(outcomes) => {
                    for ((outcome, batch), reply) in outcomes.into_iter().zip(replies) {
                        if let Some(batch) = batch {
                            // In revision order, and only once durable.
                            let _ = live.send(Arc::new(batch));
                        }
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "store group commit failed");
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Backend(e.to_string())));
                    }
                }
            }
        }
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

    /// Applies `txns` in order in one write transaction and commits once.
    fn apply_group(
        db: &Database,
        txns: Vec<Txn>,
    ) -> Result<Vec<(TxnOutcome, Option<Batch>)>, StoreError> {
        let w = db.begin_write().map_err(backend)?;
        let mut out = Vec::with_capacity(txns.len());
        {
            let mut kv = w.open_table(KV).map_err(backend)?;
            let mut meta = w.open_table(META).map_err(backend)?;
            let mut log = w.open_table(LOG).map_err(backend)?;
            let mut rev = meta
                .get("revision")
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0);
            for txn in txns {
                if !Self::compares_hold(&kv, &txn.compares)? {
                    out.push((TxnOutcome::Conflict, None));
                    continue;
                }
                let events = Self::apply_ops(&mut kv, txn.ops, rev + 1)?;
                if events.is_empty() {
                    // Nothing changed: no new revision, as etcd does.
                    out.push((TxnOutcome::Committed(rev), None));
                    continue;
                }
                rev += 1;
                log.insert(rev, encode_events(&events).as_slice())
                    .map_err(backend)?;
                if rev > LOG_KEEP {
                    // Compaction: one old entry out for each new one in.
                    log.remove(rev - LOG_KEEP).map_err(backend)?;
                }
                out.push((
                    TxnOutcome::Committed(rev),
                    Some(Batch {
                        revision: rev,
                        events,
                    }),
                ));
            }
            meta.insert("revision", rev).map_err(backend)?;
        }
        w.commit().map_err(backend)?;
        Ok(out)
    }

    fn compares_hold(
        kv: &Table<'_, &'static str, &'static [u8]>,
        compares: &[Compare],
    ) -> Result<bool, StoreError> {
        for c in compares {
            let ok = match c {
                Compare::Absent(k) => kv.get(k.as_str()).map_err(backend)?.is_none(),
                Compare::ModRevision(k, r) => match kv.get(k.as_str()).map_err(backend)? {
                    Some(v) => decode_kv(k, v.value())?.mod_revision == *r,
                    None => false,
                },
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Applies `ops` at revision `rev`; the events they made (none for deletes of absent keys).
    fn apply_ops(
        kv: &mut Table<'_, &'static str, &'static [u8]>,
        ops: Vec<Op>,
        rev: Revision,
    ) -> Result<Vec<Event>, StoreError> {
        let mut events = Vec::with_capacity(ops.len());
        for op in ops {
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
        Ok(events)
    }

    fn history(
        db: &Database,
        prefix: &str,
        after: Revision,
    ) -> Result<(Revision, Vec<Batch>), StoreError> {
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
            let events: Vec<Event> = decode_events(k.value(), v.value())?
                .into_iter()
                .filter(|e| e.kv.key.starts_with(prefix))
                .collect();
            if !events.is_empty() {
                out.push(Batch {
                    revision: k.value(),
                    events,
                });
            }
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

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, StoreError> {
        let keys = keys.to_vec();
        self.blocking(move |db| {
            let r = db.begin_read().map_err(backend)?;
            let t = r.open_table(KV).map_err(backend)?;
            keys.iter()
                .map(|k| {
                    let v = t.get(k.as_str()).map_err(backend)?;
                    v.map(|v| decode_kv(k, v.value())).transpose()
                })
                .collect()
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
        let (reply, outcome) = oneshot::channel();
        self.writer
            .queue
            .as_ref()
            .ok_or_else(|| StoreError::Backend("the store's writer has stopped".into()))?
            .send(Pending { txn, reply })
            .map_err(|_| StoreError::Backend("the store's writer has stopped".into()))?;
        outcome
            .await
            .map_err(|_| StoreError::Backend("the store's writer has stopped".into()))?
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        // Subscribe before reading history so nothing falls between the two.
        let mut live = self.live.subscribe();
        let p = prefix.to_string();
        let (upto, history) = self
            .blocking(move |db| Self::history(db, &p, after))
            .await?;
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            for b in history {
                if tx.send(Ok(Arc::new(b))).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(batch) => {
                        if batch.revision <= upto {
                            continue;
                        }
                        let matching = batch
                            .events
                            .iter()
                            .filter(|e| e.kv.key.starts_with(&prefix))
                            .count();
                        let b = if matching == batch.events.len() {
                            batch
                        } else if matching == 0 {
                            continue;
                        } else {
                            Arc::new(Batch {
                                revision: batch.revision,
                                events: batch
                                    .events
                                    .iter()
                                    .filter(|e| e.kv.key.starts_with(&prefix))
                                    .cloned()
                                    .collect(),
                            })
                        };
                        if tx.send(Ok(b)).await.is_err() {
                            return;
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

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    // The store's contract (CAS, ranges, watches, concurrent writers) is tested on every
    // backend in tests/conformance.rs; what is the embedded store's own is here.

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
