//! immediate_commit=none (OSDs and client): the primary is killed (SIGKILL) after the
//! writes and before the SYNC; the SYNC must still complete (it is retried on the new
//! primary) and every block must read back.
//!
//! What this does not reach: a process kill does not lose O_DIRECT writes that completed,
//! so the client's replay of unsynced writes (needed after a power loss) is not exercised
//! here; that would take a VM or a device that drops unflushed writes.

use std::time::Duration;
use vitastor_client::{Client, ClientOptions};
use vitastor_testkit::LocalCluster;

#[test]
fn sync_completes_after_a_primary_crash_and_data_reads_back() {
    let mut cluster = LocalCluster::start_with(
        "client-replay",
        2,
        256 << 20,
        &["--immediate_commit", "none"],
        r#"{"immediate_commit":"none"}"#,
        r#"{"1":{"name":"p","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":1,"failure_domain":"osd"}}"#,
    );
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        r#"{"name":"img","size":16777216}"#,
    );
    cluster.wait_active(1, 1, Duration::from_secs(60));
    let primary = cluster
        .etcd
        .get("/vitastor/pg/config")
        .and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok())
        .and_then(|c| c["items"]["1"]["1"]["primary"].as_u64())
        .expect("PG 1 has a primary");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime
        .block_on(Client::connect(ClientOptions::new(&cluster.etcd.address)))
        .unwrap();
    let image = runtime.block_on(client.open_image("img")).unwrap();
    let block = |i: u64| vec![(i as u8).wrapping_mul(13).wrapping_add(1); 4096];
    runtime.block_on(async {
        for i in 0..64u64 {
            image.write(i * 65536, &block(i)).await.unwrap();
        }
    });
    cluster.kill(&format!("osd{primary}"));
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), image.sync())
            .await
            .expect("SYNC finishes after the failover")
            .expect("SYNC succeeds");
        for i in 0..64u64 {
            assert_eq!(
                image.read(i * 65536, 4096).await.unwrap(),
                block(i),
                "block {i}"
            );
        }
    });
}
