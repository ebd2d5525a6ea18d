//! The client survives failovers: writes keep completing while an OSD is killed (the
//! monitor moves primaries, the PGs re-peer), and every acknowledged write reads back.
//! A request with a timeout fails with Timeout when no OSD can serve it.

use std::time::Duration;
use vitastor_client::{Client, ClientError, ClientOptions};
use vitastor_testkit::LocalCluster;

const POOLS: &str = r#"{"1":{"name":"p","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":8,"failure_domain":"osd"}}"#;

fn pattern(block: u64, round: u64) -> Vec<u8> {
    (0..4096u64)
        .map(|i| (i ^ block.wrapping_mul(31) ^ round.wrapping_mul(7)) as u8)
        .collect()
}

#[test]
fn writes_survive_an_osd_kill_and_read_back() {
    let mut cluster = LocalCluster::start(
        "client-failover",
        3,
        r#"{"immediate_commit":"all","osd_out_time":2}"#,
        POOLS,
    );
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        r#"{"name":"img","size":67108864}"#,
    );
    cluster.wait_active(1, 8, Duration::from_secs(60));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime
        .block_on(Client::connect(ClientOptions::new(&cluster.etcd.address)))
        .unwrap();
    let image = runtime.block_on(client.open_image("img")).unwrap();
    // 256 blocks, one per 128 KiB object: every PG gets 32.
    let blocks: Vec<u64> = (0..256).map(|i| i * 131072 + (i % 32) * 4096).collect();
    let mut written = std::collections::BTreeMap::new();
    for round in 0..4u64 {
        if round == 2 {
            cluster.kill("osd2");
        }
        let started = std::time::Instant::now();
        runtime.block_on(async {
            let writes = blocks.iter().map(|&offset| {
                let image = image.clone();
                async move { image.write(offset, &pattern(offset, round)).await }
            });
            for result in futures_join(writes).await {
                result.expect("write completes despite the failover");
            }
        });
        eprintln!("round {round}: {:?}", started.elapsed());
        for &offset in &blocks {
            written.insert(offset, round);
        }
    }
    runtime.block_on(async {
        for (&offset, &round) in &written {
            let data = image.read(offset, 4096).await.unwrap();
            assert_eq!(data, pattern(offset, round), "block at {offset}");
        }
    });

    // Nothing can serve pool 2 (no PGs placed for it): a bounded request times out.
    cluster.etcd.put(
        "/vitastor/config/pools",
        &POOLS.replace("}}", r#"},"2":{"name":"q","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":8,"root_node":"nowhere"}}"#),
    );
    cluster.etcd.put(
        "/vitastor/config/inode/2/1",
        r#"{"name":"stuck","size":1048576}"#,
    );
    let mut options = ClientOptions::new(&cluster.etcd.address);
    options.request_timeout = Some(Duration::from_millis(800));
    runtime.block_on(async {
        let client = Client::connect(options).await.unwrap();
        let image = client.open_image("stuck").await.unwrap();
        assert_eq!(
            image.read(0, 4096).await.unwrap_err(),
            ClientError::Timeout(800)
        );
        assert!(matches!(
            image.read(1, 4096).await,
            Err(ClientError::InvalidArgument(_))
        ));
        assert!(matches!(
            image.read(0, 2 << 20).await,
            Err(ClientError::InvalidArgument(_))
        ));
        assert_eq!(
            client.open_image("nothing").await.unwrap_err(),
            ClientError::NoSuchImage("nothing".into())
        );
    });
}

async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    futures_util::future::join_all(futures).await
}
