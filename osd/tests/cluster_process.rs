//! Process-level tests: a real etcd, real `vitastor-osd` processes on files, the pool written
//! with etcdctl as an operator would, the PG map written directly to `/pg/config`.

mod common;

use common::{wait_for, Cluster, WireClient};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;
use vitastor_proto::wire::RequestBody;

const INODE: u64 = 1 << 48 | 1;
const BLOCK: u64 = 128 << 10;
const PGS: u32 = 8;

/// PG `pg` of a 2-replica map over three OSDs: primary `pg % 3 + 1`, next OSD as replica.
fn members(pg: u32) -> (u64, u64) {
    let primary = u64::from(pg % 3) + 1;
    (primary, primary % 3 + 1)
}

fn pg_map(pgs: u32) -> String {
    let items: Vec<String> = (1..=pgs)
        .map(|pg| {
            let (a, b) = members(pg);
            format!(r#""{pg}":{{"osd_set":[{a},{b}],"primary":{a}}}"#)
        })
        .collect();
    format!(r#"{{"items":{{"1":{{{}}}}}}}"#, items.join(","))
}

fn sector(value: u32) -> Vec<u8> {
    let mut data = vec![0u8; 4096];
    for (i, chunk) in data.chunks_mut(4).enumerate() {
        chunk.copy_from_slice(&(value ^ i as u32).to_le_bytes());
    }
    data
}

/// Object `n`'s PG (replicated, pg_stripe_size = block size).
fn pg_of(object: u64) -> u32 {
    (object % u64::from(PGS)) as u32 + 1
}

struct Writer {
    clients: BTreeMap<u64, WireClient>,
}

impl Writer {
    /// Writes through the object's primary; retries -EPIPE (PG repeering) for a while.
    /// `Some(true)` = acknowledged, `Some(false)` = outcome unknown, `None` = not attempted.
    fn write(&mut self, cluster: &Cluster, object: u64, value: u32) -> Option<bool> {
        let (primary, _) = members(pg_of(object));
        for _ in 0..100 {
            let client = match self.clients.entry(primary) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert(WireClient::connect(&cluster.osd_address(primary)?).ok()?)
                }
            };
            match client.write(INODE, object * BLOCK, &sector(value)) {
                Ok(4096) => return Some(true),
                Ok(-32) => std::thread::sleep(Duration::from_millis(50)),
                Ok(other) => panic!("write of object {object} failed: {other}"),
                Err(_) => {
                    self.clients.remove(&primary);
                    return Some(false);
                }
            }
        }
        Some(false)
    }
}

/// Reads every object through its primary (or its replica) and checks that it holds the
/// acknowledged write, or a later one whose outcome was unknown.
fn check_objects(
    writer: &mut Writer,
    cluster: &Cluster,
    acked: &BTreeMap<u64, u32>,
    maybe: &BTreeMap<u64, Vec<u32>>,
    on_replica: bool,
) {
    for (&object, &value) in acked {
        let (primary, replica) = members(pg_of(object));
        let osd = if on_replica { replica } else { primary };
        let address = cluster.osd_address(osd).unwrap();
        let client = writer
            .clients
            .entry(osd)
            .or_insert_with(|| WireClient::connect(&address).unwrap());
        let data = client.read(INODE, object * BLOCK, 4096).unwrap().unwrap();
        let ok = data == sector(value)
            || maybe
                .get(&object)
                .is_some_and(|m| m.iter().any(|&v| data == sector(v)));
        assert!(
            ok,
            "object {object} on OSD {osd}: acknowledged write {value} lost"
        );
    }
}

#[test]
fn three_osds_serve_a_replicated_pool_and_survive_kill_9() {
    let mut cluster = Cluster::start("replicated", 3);
    // Exactly as Vitastor's documentation shows it.
    cluster.put(
        "/vitastor/config/pools",
        &format!(r#"{{"1":{{"name":"testpool","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":{PGS},"failure_domain":"host"}}}}"#),
    );
    cluster.put("/vitastor/pg/config", &pg_map(PGS));
    for num in 1..=3 {
        cluster.start_osd(num);
    }
    let all_pgs: Vec<(u32, u32)> = (1..=PGS).map(|pg| (1, pg)).collect();
    cluster.wait_active(&all_pgs, Duration::from_secs(60));

    // Stats are reported.
    wait_for("osd stats", Duration::from_secs(10), || {
        cluster.get_prefix("/vitastor/osd/stats/").len() == 3
    });

    // A second OSD 1 refuses to start: its device is locked by the first (the device lock
    // test covers the message and other OSD numbers).
    let output = cluster.osd_command(1).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("is in use by another process"), "{stderr}");

    let mut writer = Writer {
        clients: BTreeMap::new(),
    };
    let objects = 24u64;
    let mut acked: BTreeMap<u64, u32> = BTreeMap::new();
    let mut maybe: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let mut value = 1u32;
    for object in 0..objects {
        assert_eq!(writer.write(&cluster, object, value), Some(true));
        acked.insert(object, value);
        value += 1;
    }
    for object in 0..objects {
        let (primary, _) = members(pg_of(object));
        let client = writer.clients.get_mut(&primary).unwrap();
        let data = client.read(INODE, object * BLOCK, 4096).unwrap().unwrap();
        assert_eq!(data, sector(acked[&object]), "object {object}");
    }

    // kill -9 OSD 2 in the middle of writes, keep writing, restart it.
    for round in 0..3 * objects {
        let object = round % objects;
        if round == objects / 2 {
            cluster.kill_osd(2);
        }
        match writer.write(&cluster, object, value) {
            Some(true) => {
                acked.insert(object, value);
                maybe.remove(&object);
            }
            Some(false) => maybe.entry(object).or_default().push(value),
            None => {}
        }
        value += 1;
    }
    wait_for("OSD 2's lease to expire", Duration::from_secs(30), || {
        cluster.osd_address(2).is_none()
    });
    cluster.start_osd(2);
    cluster.wait_active(&all_pgs, Duration::from_secs(60));
    writer.clients.clear();

    // Every acknowledged write is there (or a later write whose outcome was unknown).
    check_objects(&mut writer, &cluster, &acked, &maybe, false);

    // Kill each replica's primary in turn is covered by the simulation; here move every
    // PG's primary to its replica and read again, so the replicas' copies are checked.
    let swapped: Vec<String> = (1..=PGS)
        .map(|pg| {
            let (a, b) = members(pg);
            format!(r#""{pg}":{{"osd_set":[{a},{b}],"primary":{b}}}"#)
        })
        .collect();
    cluster.put(
        "/vitastor/pg/config",
        &format!(r#"{{"items":{{"1":{{{}}}}}}}"#, swapped.join(",")),
    );
    wait_for(
        "PGs to move to their replicas",
        Duration::from_secs(60),
        || {
            let states = cluster.get_prefix("/vitastor/pg/state/");
            (1..=PGS).all(|pg| {
                let key = format!("/vitastor/pg/state/1/{pg}");
                let want = format!("\"primary\":{}", members(pg).1);
                states
                    .iter()
                    .any(|(k, v)| *k == key && v.contains("\"active\"") && v.contains(&want))
            })
        },
    );
    writer.clients.clear();
    let unknown: usize = maybe.values().map(Vec::len).sum();
    eprintln!(
        "{} objects, {unknown} writes with unknown outcome around the kill",
        acked.len()
    );
    check_objects(&mut writer, &cluster, &acked, &maybe, true);
}

#[test]
fn bad_input_closes_one_connection_and_bad_config_is_ignored() {
    let mut cluster = Cluster::start("badinput", 1);
    cluster.put(
        "/vitastor/config/pools",
        r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":2,"pg_minsize":1,"pg_count":2}}"#,
    );
    // PG 2 names OSD 99, which does not exist: the PG runs degraded on OSD 1 alone.
    cluster.put(
        "/vitastor/pg/config",
        r#"{"items":{"1":{"1":{"osd_set":[1,0],"primary":1},"2":{"osd_set":[1,99],"primary":1}}}}"#,
    );
    cluster.start_osd(1);
    cluster.wait_active(&[(1, 1), (1, 2)], Duration::from_secs(60));
    let state = cluster
        .etcdctl(&["get", "--print-value-only", "/vitastor/pg/state/1/2"])
        .unwrap();
    assert!(state.contains("degraded"), "{state}");
    let address = cluster.osd_address(1).unwrap();
    let mut good = WireClient::connect(&address).unwrap();
    assert_eq!(good.call(RequestBody::Ping, &[]).unwrap().0.retval, 0);

    // Garbage bytes: that connection is closed.
    let mut garbage = WireClient::connect(&address).unwrap();
    garbage.stream.write_all(&[0xAB; 300]).unwrap();
    assert!(
        garbage.read_reply().is_err(),
        "garbage must close the connection"
    );

    // A valid header announcing a huge payload: closed.
    let mut huge = WireClient::connect(&address).unwrap();
    let mut header = vitastor_proto::wire::Request {
        id: 1,
        body: RequestBody::Write(vitastor_proto::wire::request::Rw {
            inode: INODE,
            offset: 0,
            len: 4096,
            ..Default::default()
        }),
    }
    .encode();
    header[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    header[124..128].copy_from_slice(&[0; 4]);
    huge.stream.write_all(&header).unwrap();
    assert!(
        huge.read_reply().is_err(),
        "an oversized length must close the connection"
    );

    // A truncated header, then the client goes away: nothing happens to the OSD.
    let mut truncated = WireClient::connect(&address).unwrap();
    truncated.stream.write_all(&header[..60]).unwrap();
    drop(truncated);

    // An unknown opcode gets -EINVAL and the connection stays usable.
    let mut unknown = header;
    unknown[16..24].copy_from_slice(&77u64.to_le_bytes());
    unknown[24..128].fill(0);
    good.stream.write_all(&unknown).unwrap();
    let mut raw = [0u8; 128];
    std::io::Read::read_exact(&mut good.stream, &mut raw).unwrap();
    assert_eq!(
        raw[16..24],
        77u64.to_le_bytes(),
        "the reply names the unknown opcode"
    );
    assert_eq!(i64::from_le_bytes(raw[24..32].try_into().unwrap()), -22);

    // A whole-object write and read back.
    let object: Vec<u8> = (0..BLOCK).map(|i| (i % 251) as u8).collect();
    assert_eq!(good.write(INODE, 4 * BLOCK, &object).unwrap(), BLOCK as i64);
    assert_eq!(
        good.read(INODE, 4 * BLOCK, BLOCK as u32).unwrap().unwrap(),
        object
    );

    // Unaligned and cross-object writes get -EINVAL.
    assert_eq!(good.write(INODE, 100, &[1u8; 4096]).unwrap(), -22);
    assert_eq!(good.write(INODE, BLOCK - 4096, &[1u8; 8192]).unwrap(), -22);

    // Invalid pool JSON: logged, the last valid pool stays in force.
    cluster.put("/vitastor/config/pools", "{not json");
    cluster.put(
        "/vitastor/config/pools",
        r#"{"1":{"name":"testpool","scheme":"replicated","pg_size":0,"pg_count":2}}"#,
    );
    wait_for(
        "the OSD to log the invalid pool",
        Duration::from_secs(10),
        || cluster.osd_log(1).matches("config/pools").count() >= 2,
    );
    // The other client still works: write and read back.
    assert_eq!(good.write(INODE, 0, &sector(7)).unwrap(), 4096);
    assert_eq!(good.read(INODE, 0, 4096).unwrap().unwrap(), sector(7));
    assert_eq!(good.write(INODE, BLOCK, &sector(8)).unwrap(), 4096);
    assert_eq!(good.read(INODE, BLOCK, 4096).unwrap().unwrap(), sector(8));
}
