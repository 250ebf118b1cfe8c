//! What etcd alone sustains on this machine, for comparing Berth's figures on etcd with:
//! transactions of K puts of 600 bytes (each guarded by a compare, as a registration is) from
//! C concurrent writers, for 8 s, against a local three-member cluster, through Berth's own
//! etcd client. Usage: `etcd_txn_probe K C`; prints `k=K c=C txn/s=N keys/s=N`.
#![allow(clippy::unwrap_used)]
use berth_store::{local_etcd, Etcd, EtcdOptions, Store, Txn};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let mut a = std::env::args().skip(1);
    let k: usize = a.next().unwrap().parse().unwrap();
    let c: usize = a.next().unwrap().parse().unwrap();
    let dir = std::env::temp_dir().join(format!("probe-{}", std::process::id()));
    let cluster = local_etcd::LocalEtcd::start(&dir, 3).unwrap();
    let etcd = Etcd::connect(EtcdOptions::parse(&cluster.url()).unwrap())
        .await
        .unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..c {
        let etcd = etcd.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while start.elapsed() < Duration::from_secs(8) {
                let mut t = Txn::new();
                for j in 0..k {
                    let key = format!("probe/{w}/{n}/{j}");
                    t = t.unchanged(&key, None).put(key, vec![b'x'; 600]);
                }
                etcd.txn(t).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut txns = 0;
    for t in tasks {
        txns += t.await.unwrap();
    }
    let s = start.elapsed().as_secs_f64();
    println!(
        "k={k} c={c} txn/s={:.0} keys/s={:.0}",
        txns as f64 / s,
        (txns * k) as f64 / s
    );
}
