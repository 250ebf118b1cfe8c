//! The store's contract, run on every backend: the embedded store (in memory) and etcd (a
//! member of Debian's `etcd` this test starts on loopback ports, one per test), in plain HTTP
//! and over TLS with client certificates (made with `openssl`). Revisions are
//! compared relative to where each store starts (etcd's first write is revision 2, the
//! embedded store's 1). `BERTH_SKIP_ETCD=1` skips the etcd half explicitly; without it, a
//! missing `etcd` fails loudly.

#![allow(clippy::unwrap_used)]

use berth_store::local_etcd::{Certs, LocalEtcd};
use berth_store::{
    Embedded, Etcd, EtcdOptions, EtcdTls, EventKind, KeyValue, Store, Txn, TxnOutcome,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn keys(v: Vec<KeyValue>) -> Vec<String> {
    v.into_iter().map(|kv| kv.key).collect()
}

async fn next_batch(w: &mut berth_store::Watch) -> Arc<berth_store::Batch> {
    tokio::time::timeout(Duration::from_secs(10), w.rx.recv())
        .await
        .expect("a batch within 10 s")
        .expect("the watch is open")
        .expect("a batch, not an error")
}

mod suite {
    use super::*;

    pub async fn cas_and_revisions(s: Arc<dyn Store>) {
        let base = s.revision().await.unwrap();
        assert_eq!(
            s.txn(Txn::new().put("a", b"1".to_vec())).await.unwrap(),
            TxnOutcome::Committed(base + 1)
        );
        let a = s.get("a").await.unwrap().unwrap();
        assert_eq!((a.create_revision, a.mod_revision), (base + 1, base + 1));
        // A stale read-modify-write loses.
        s.txn(Txn::new().unchanged("a", Some(&a)).put("a", b"2".to_vec()))
            .await
            .unwrap();
        let stale = Txn::new().unchanged("a", Some(&a)).put("a", b"3".to_vec());
        assert_eq!(s.txn(stale).await.unwrap(), TxnOutcome::Conflict);
        let a2 = s.get("a").await.unwrap().unwrap();
        assert_eq!(
            (a2.value.as_slice(), a2.create_revision, a2.mod_revision),
            (&b"2"[..], base + 1, base + 2)
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
            base + 2,
            "a conflict does not bump the revision"
        );
        assert_eq!(s.get("absent").await.unwrap(), None);
    }

    pub async fn range_with_prefix_and_pagination(s: Arc<dyn Store>) {
        let t = ["p/a", "p/b", "p/c", "q/a"]
            .iter()
            .fold(Txn::new(), |t, k| t.put(*k, k.as_bytes().to_vec()));
        s.txn(t).await.unwrap();
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
    }

    /// More keys than one page of etcd's answers, written in transactions of 100.
    pub async fn long_ranges_and_many_gets_are_whole(s: Arc<dyn Store>) {
        let names: Vec<String> = (0..2500).map(|i| format!("many/{i:05}")).collect();
        for chunk in names.chunks(100) {
            let t = chunk
                .iter()
                .fold(Txn::new(), |t, k| t.put(k.clone(), k.as_bytes().to_vec()));
            s.txn(t).await.unwrap();
        }
        assert_eq!(keys(s.range("many/", None, None).await.unwrap()), names);
        assert_eq!(
            keys(
                s.range("many/", Some("many/00999"), Some(1200))
                    .await
                    .unwrap()
            ),
            names[1000..2200]
        );
        let mut wanted: Vec<String> = names.iter().step_by(7).cloned().collect();
        wanted.insert(3, "many/none".into());
        let got = s.get_many(&wanted).await.unwrap();
        assert_eq!(got.len(), wanted.len());
        for (k, kv) in wanted.iter().zip(&got) {
            match kv {
                Some(kv) => assert_eq!(&kv.key, k),
                None => assert_eq!(k, "many/none"),
            }
        }
        assert_eq!(s.delete_prefix("many/").await.unwrap(), 2500);
    }

    pub async fn watch_replays_history_then_follows_live(s: Arc<dyn Store>) {
        let base = s.revision().await.unwrap();
        s.txn(Txn::new().put("w/1", b"a".to_vec())).await.unwrap();
        s.txn(Txn::new().put("x/1", b"b".to_vec())).await.unwrap();
        let mut w = s.watch("w/", base).await.unwrap();
        s.txn(Txn::new().delete("w/1")).await.unwrap();
        s.txn(Txn::new().put("w/2", b"c".to_vec())).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let b = next_batch(&mut w).await;
            for e in &b.events {
                assert_eq!(e.kv.mod_revision, b.revision);
                seen.push((e.kind, e.kv.key.clone(), e.kv.mod_revision - base));
            }
        }
        assert_eq!(
            seen,
            [
                (EventKind::Put, "w/1".to_string(), 1),
                (EventKind::Delete, "w/1".to_string(), 3),
                (EventKind::Put, "w/2".to_string(), 4)
            ]
        );
    }

    pub async fn concurrent_writers_share_commits_and_lose_nothing(s: Arc<dyn Store>) {
        // 32 writers each increment one counter by compare-and-swap, retrying on conflict, and
        // each also writes a key of its own: every acknowledged write is there after.
        let mut handles = Vec::new();
        for i in 0..32u32 {
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                loop {
                    let seen = s.get("counter").await.unwrap();
                    let n = seen
                        .as_ref()
                        .map(|kv| u32::from_le_bytes(kv.value[..4].try_into().unwrap()))
                        .unwrap_or(0);
                    let t = Txn::new()
                        .unchanged("counter", seen.as_ref())
                        .put("counter", (n + 1).to_le_bytes().to_vec())
                        .put(format!("own/{i}"), vec![1]);
                    if let TxnOutcome::Committed(rev) = s.txn(t).await.unwrap() {
                        return rev;
                    }
                }
            }));
        }
        let mut revs = Vec::new();
        for h in handles {
            revs.push(h.await.unwrap());
        }
        revs.sort_unstable();
        revs.dedup();
        assert_eq!(revs.len(), 32, "every commit has its own revision");
        let c = s.get("counter").await.unwrap().unwrap();
        assert_eq!(u32::from_le_bytes(c.value[..4].try_into().unwrap()), 32);
        assert_eq!(s.range("own/", None, None).await.unwrap().len(), 32);
    }

    pub async fn a_transaction_that_changes_nothing_takes_no_revision(s: Arc<dyn Store>) {
        s.txn(Txn::new().put("a", vec![1])).await.unwrap();
        let at = s.revision().await.unwrap();
        assert_eq!(
            s.txn(Txn::new().delete("absent")).await.unwrap(),
            TxnOutcome::Committed(at)
        );
        assert_eq!(s.revision().await.unwrap(), at);
    }

    pub async fn a_transactions_events_arrive_in_one_batch(s: Arc<dyn Store>) {
        let base = s.revision().await.unwrap();
        let mut w = s.watch("", base).await.unwrap();
        s.txn(Txn::new().put("x/1", vec![1]).put("y/1", vec![2]))
            .await
            .unwrap();
        let b = next_batch(&mut w).await;
        assert_eq!(b.revision, base + 1);
        assert_eq!(b.events.len(), 2);
    }

    /// Ops apply in order: a key written then deleted in one transaction ends deleted.
    pub async fn the_last_op_on_a_key_wins(s: Arc<dyn Store>) {
        s.txn(Txn::new().put("k", vec![1])).await.unwrap();
        let seen = s.get("k").await.unwrap().unwrap();
        let t = Txn::new()
            .replace(&seen, vec![2])
            .delete("k")
            .put("j", vec![1])
            .put("j", vec![3]);
        assert!(matches!(s.txn(t).await.unwrap(), TxnOutcome::Committed(_)));
        assert_eq!(s.get("k").await.unwrap(), None);
        assert_eq!(s.get("j").await.unwrap().unwrap().value, [3]);
    }
}

fn embedded() -> Arc<dyn Store> {
    Arc::new(Embedded::in_memory().unwrap())
}

/// A one-member etcd for one test, or `None` when etcd is skipped on purpose.
fn local_etcd() -> Option<(LocalEtcd, tempfile::TempDir)> {
    if std::env::var("BERTH_SKIP_ETCD").as_deref() == Ok("1") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let e = LocalEtcd::start(dir.path(), 1).unwrap_or_else(|e| panic!("{e}"));
    Some((e, dir))
}

/// A one-member etcd serving clients over TLS only, checking their certificates.
fn local_etcd_tls() -> Option<(LocalEtcd, Certs, tempfile::TempDir)> {
    if std::env::var("BERTH_SKIP_ETCD").as_deref() == Ok("1") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Certs::make(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let e = LocalEtcd::start_with(&dir.path().join("etcd"), 1, Some(c.member()))
        .unwrap_or_else(|e| panic!("{e}"));
    Some((e, c, dir))
}

fn tls_options(e: &LocalEtcd, ca: &Path, client: Option<&(PathBuf, PathBuf)>) -> EtcdOptions {
    let mut o = EtcdOptions::parse(&e.url()).unwrap();
    o.tls = Some(EtcdTls {
        ca: ca.to_path_buf(),
        client: client.cloned(),
    });
    o
}

async fn etcd_tls(e: &LocalEtcd, c: &Certs) -> Arc<dyn Store> {
    Arc::new(
        Etcd::connect(tls_options(e, &c.ca, Some(&c.client)))
            .await
            .unwrap_or_else(|e| panic!("connecting over TLS: {e}")),
    )
}

async fn etcd(e: &LocalEtcd) -> Arc<dyn Store> {
    Arc::new(
        Etcd::connect(EtcdOptions::parse(&e.url()).unwrap())
            .await
            .unwrap(),
    )
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[test]
                fn $name() {
                    super::rt().block_on(super::suite::$name(super::embedded()));
                }
            )*
        }
        mod etcd {
            $(
                #[test]
                fn $name() {
                    let Some((e, _dir)) = super::local_etcd() else { return };
                    super::rt().block_on(async { super::suite::$name(super::etcd(&e).await).await });
                }
            )*
        }
        mod etcd_tls {
            $(
                #[test]
                fn $name() {
                    let Some((e, c, _dir)) = super::local_etcd_tls() else { return };
                    super::rt().block_on(async { super::suite::$name(super::etcd_tls(&e, &c).await).await });
                }
            )*
        }
    };
}

on_every_backend!(
    cas_and_revisions,
    range_with_prefix_and_pagination,
    long_ranges_and_many_gets_are_whole,
    watch_replays_history_then_follows_live,
    concurrent_writers_share_commits_and_lose_nothing,
    a_transaction_that_changes_nothing_takes_no_revision,
    a_transactions_events_arrive_in_one_batch,
    the_last_op_on_a_key_wins,
);

/// Over TLS, a client must trust the member's CA and, as etcd checks clients' certificates,
/// present one; each refusal says what is wrong. Plain `etcd://` with certificates, and
/// `etcds://` without them, are refused before anything is sent.
#[test]
fn etcd_over_tls_refuses_a_wrong_ca_and_a_missing_client_certificate() {
    let Some((e, c, _dir)) = local_etcd_tls() else {
        return;
    };
    rt().block_on(async {
        let wrong_ca = Etcd::connect(tls_options(&e, &c.other_ca, Some(&c.client))).await;
        let err = wrong_ca
            .expect_err("a member signed by another CA is refused")
            .to_string();
        assert!(err.contains("etcd"), "{err}");
        let no_cert = Etcd::connect(tls_options(&e, &c.ca, None)).await;
        assert!(no_cert.is_err(), "etcd checks client certificates");
        let bare = Etcd::connect(EtcdOptions::parse(&e.url()).unwrap()).await;
        let err = bare.expect_err("etcds:// needs a CA").to_string();
        assert!(err.contains("--etcd-ca"), "{err}");
        let mut plain = EtcdOptions::parse(&e.url().replace("etcds://", "etcd://")).unwrap();
        plain.tls = Some(EtcdTls {
            ca: c.ca.clone(),
            client: None,
        });
        let err = Etcd::connect(plain)
            .await
            .expect_err("certificates for plain HTTP")
            .to_string();
        assert!(err.contains("etcds://"), "{err}");
        let missing = Etcd::connect(tls_options(&e, Path::new("/nonexistent/ca.pem"), None)).await;
        let err = missing
            .expect_err("a CA file that is not there")
            .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    });
}

/// Three etcd members; the one the client prefers is killed while writers and a watch run.
/// Every write etcd acknowledged is there afterwards and was seen by the watch, once, in
/// revision order; writes go on through the other members; the member comes back.
#[test]
fn etcd_loses_no_acknowledged_write_when_a_member_dies() {
    if std::env::var("BERTH_SKIP_ETCD").as_deref() == Ok("1") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalEtcd::start(dir.path(), 3).unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.url();
    rt().block_on(async move {
        let s: Arc<dyn Store> = Arc::new(
            Etcd::connect(EtcdOptions::parse(&url).unwrap())
                .await
                .unwrap(),
        );
        let base = s.revision().await.unwrap();
        let mut w = s.watch("ack/", base).await.unwrap();
        let writer = {
            let s = s.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut unknown = 0;
                for i in 0..300u32 {
                    let t = Txn::new().put(format!("ack/{i:04}"), i.to_le_bytes().to_vec());
                    match s.txn(t).await {
                        Ok(TxnOutcome::Committed(rev)) => acked.push((i, rev)),
                        Ok(TxnOutcome::Conflict) => panic!("no compare, no conflict"),
                        // Lost in the member's death: etcd may or may not have it.
                        Err(_) => unknown += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (acked, unknown)
            })
        };
        tokio::time::sleep(Duration::from_millis(400)).await;
        // The client prefers the member that answered last: the first one.
        cluster.kill(0);
        let (acked, unknown) = writer.await.unwrap();
        eprintln!(
            "{} writes acknowledged, {unknown} lost with the member",
            acked.len()
        );
        assert!(
            acked.len() >= 290,
            "writes go on through the other members: {} acknowledged, {unknown} unknown",
            acked.len()
        );
        for (i, rev) in &acked {
            let kv = s.get(&format!("ack/{i:04}")).await.unwrap();
            let kv = kv.unwrap_or_else(|| panic!("acknowledged write {i} is lost"));
            assert_eq!(kv.mod_revision, *rev);
        }
        // The watch delivered every acknowledged write, in revision order, none twice.
        let last = acked.last().unwrap().1;
        let mut seen = Vec::new();
        let mut at = base;
        while at < last {
            let b = next_batch(&mut w).await;
            assert!(b.revision > at, "revisions only go forward");
            at = b.revision;
            seen.extend(b.events.iter().map(|e| e.kv.mod_revision));
        }
        for (i, rev) in &acked {
            assert!(seen.contains(rev), "the watch missed write {i} at {rev}");
        }
        let mut once = seen.clone();
        once.dedup();
        assert_eq!(once, seen, "no revision delivered twice");
        cluster.restart(0).unwrap();
        s.txn(Txn::new().put("after", vec![1])).await.unwrap();
    });
}

/// etcd's leases, and writes fenced on a leadership key: a leader's writes pass while its key
/// stands, a conflict of its own stays a conflict, and once its lease is gone (even with the
/// key won again by another) its late writes are refused as `Deposed`, while unfenced writes
/// go on.
#[test]
fn etcd_leases_elect_and_fence_a_leader() {
    use berth_store::{fence, Fenced, StoreError};
    let Some((e, _dir)) = local_etcd() else {
        return;
    };
    rt().block_on(async {
        let raw = etcd(&e).await;
        let s: Arc<dyn Store> = Arc::new(Fenced::new(raw.clone(), "leader"));
        let leases = s.leases().expect("etcd has leases");
        let a = leases.grant(Duration::from_secs(5)).await.unwrap();
        let won = leases
            .create_leased("leader", b"a".to_vec(), a)
            .await
            .unwrap()
            .expect("the first campaign wins");
        let b = leases.grant(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            leases
                .create_leased("leader", b"b".to_vec(), b)
                .await
                .unwrap(),
            None,
            "the key is held"
        );
        assert!(leases.keep_alive(a).await.unwrap());

        // A's writes pass while it leads; its own stale compare is still a plain conflict.
        let put = |v: u8| Txn::new().put("work", vec![v]);
        assert!(matches!(
            fence(won, s.txn(put(1))).await.unwrap(),
            TxnOutcome::Committed(_)
        ));
        let stale = Txn::new().unchanged("work", None).put("work", vec![2]);
        assert_eq!(
            fence(won, s.txn(stale)).await.unwrap(),
            TxnOutcome::Conflict
        );

        // A's lease ends (as when it stops renewing it); B wins the key.
        leases.revoke(a).await.unwrap();
        assert!(
            !leases.keep_alive(a).await.unwrap(),
            "a revoked lease is gone"
        );
        assert_eq!(
            raw.get("leader").await.unwrap(),
            None,
            "its key went with it"
        );
        let b_won = leases
            .create_leased("leader", b"b".to_vec(), b)
            .await
            .unwrap()
            .expect("B wins once A's key is gone");
        match fence(won, s.txn(put(3))).await {
            Err(StoreError::Deposed { key }) => assert_eq!(key, "leader"),
            other => panic!("A's late write must be refused: {other:?}"),
        }
        assert_eq!(s.get("work").await.unwrap().unwrap().value, [1]);
        assert!(matches!(
            fence(b_won, s.txn(put(4))).await.unwrap(),
            TxnOutcome::Committed(_)
        ));
        assert!(
            matches!(s.txn(put(5)).await.unwrap(), TxnOutcome::Committed(_)),
            "writes outside a fence are not fenced"
        );
    });
}

#[test]
fn the_embedded_store_has_no_leases_its_one_server_leads() {
    assert!(embedded().leases().is_none());
}
