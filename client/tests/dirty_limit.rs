//! Issue 16 item 6: without immediate_commit=all the client keeps a copy of every write
//! until a SYNC covers it; `client_max_dirty_ops` / `client_max_dirty_bytes` (Vitastor's
//! names, from /config/global) bound those copies: past either limit the client SYNCs by
//! itself, and the data reads back.

use std::time::Duration;
use vitastor_client::{Client, ClientOptions};
use vitastor_testkit::LocalCluster;

#[test]
fn unsynced_writes_stay_under_the_dirty_limits() {
    const MAX_OPS: usize = 8;
    const MAX_BYTES: u64 = 48 << 10;
    let cluster = LocalCluster::start_with(
        "client-dirty-limit",
        1,
        256 << 20,
        &["--immediate_commit", "none"],
        &format!(
            r#"{{"immediate_commit":"none","client_max_dirty_ops":{MAX_OPS},"client_max_dirty_bytes":{MAX_BYTES}}}"#
        ),
        r#"{"1":{"name":"p","scheme":"replicated","pg_size":1,"pg_minsize":1,"pg_count":1,"failure_domain":"osd"}}"#,
    );
    cluster.etcd.put(
        "/vitastor/config/inode/1/1",
        r#"{"name":"img","size":16777216}"#,
    );
    cluster.wait_active(1, 1, Duration::from_secs(60));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime
        .block_on(Client::connect(ClientOptions::new(&cluster.etcd.address)))
        .unwrap();
    let image = runtime.block_on(client.open_image("img")).unwrap();
    let block = |i: u64, len: usize| vec![(i as u8).wrapping_mul(29).wrapping_add(3); len];
    let mut most = (0, 0);
    runtime.block_on(async {
        for i in 0..100u64 {
            // 4 KiB writes reach the ops limit first, 16 KiB ones the bytes limit.
            let len = if i < 50 { 4096 } else { 16384 };
            image.write(i * 65536, &block(i, len)).await.unwrap();
            let (bytes, ops) = client.unsynced();
            assert!(
                ops <= MAX_OPS && bytes <= MAX_BYTES,
                "write {i}: {ops} unsynced writes of {bytes} bytes"
            );
            most = (most.0.max(bytes), most.1.max(ops));
        }
    });
    assert!(
        most.1 >= MAX_OPS - 1,
        "writes are kept until a SYNC: {most:?}"
    );
    runtime.block_on(async {
        for i in 0..100u64 {
            let len = if i < 50 { 4096 } else { 16384 };
            assert_eq!(
                image.read(i * 65536, len as u64).await.unwrap(),
                block(i, len),
                "block {i}"
            );
        }
    });
}
