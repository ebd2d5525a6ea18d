//! What a stock Vitastor client or tool sends to our OSD (issue 18): headers without our
//! crc. Read-only sub-ops (SEC_LIST as `vitastor-cli rm` sends it) are answered, mutating
//! sub-ops without the seal get -EPERM, unknown opcodes -EINVAL, and the connection stays
//! open through all of it. The SHOW_CONFIG reply follows Vitastor's NUL convention. Also
//! the sealed SEC_STABILIZE / SEC_ROLLBACK of our primaries (EC's second phase).

use vitastor_osd::blockstore::prepare::prepare;
use vitastor_osd::blockstore::sim::SimDisk;
use vitastor_osd::blockstore::{Blockstore, BlockstoreConfig, FormatOptions};
use vitastor_osd::daemon::{Action, Osd, OsdSettings};
use vitastor_proto::errno;
use vitastor_proto::wire::request::{SecList, SecRw};
use vitastor_proto::wire::show_config::ShowConfigReply;
use vitastor_proto::wire::{Opcode, Reply, ReplyBody, Request, RequestBody};
use vitastor_proto::wire::{PACKET_SIZE, REQUEST_MAGIC};

const CONN: u64 = 1000;

fn osd() -> Osd<SimDisk> {
    let mut disk = SimDisk::new(64 << 20, 18);
    let options = FormatOptions {
        journal_size: 4 << 20,
        ..FormatOptions::default()
    };
    prepare(&mut disk, &options).expect("prepare");
    let store = Blockstore::open(disk, BlockstoreConfig::default()).expect("open");
    let mut osd = Osd::new(OsdSettings::new(3), store);
    osd.on_connect(CONN);
    osd
}

/// A header as Vitastor sends it: our encoding with the crc bytes zeroed.
fn unsealed(request: Request) -> [u8; PACKET_SIZE] {
    let mut header = request.encode();
    header[124..].copy_from_slice(&[0; 4]);
    header
}

/// Feeds `bytes`, runs the store, and returns every reply sent on `CONN` as (id, retval,
/// decoded reply unless its opcode is unknown, payload); panics if the OSD closed the
/// connection.
fn exchange(osd: &mut Osd<SimDisk>, bytes: &[u8]) -> Vec<(u64, i64, Option<Reply>, Vec<u8>)> {
    osd.on_bytes(CONN, bytes);
    let mut stream = Vec::new();
    for _ in 0..100 {
        osd.poll_store();
        let mut actions = Vec::new();
        osd.take_actions(&mut actions);
        for action in actions {
            match action {
                Action::Reply { conn, bytes } if conn == CONN => stream.extend(bytes),
                Action::Close { .. } => panic!("the OSD closed the connection"),
                _ => {}
            }
        }
    }
    let mut replies = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let header = &stream[at..at + PACKET_SIZE];
        let word = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
        let reply = Reply::decode(header).ok();
        let payload_len = reply.map_or(0, |r| r.payload_len() as usize);
        at += PACKET_SIZE;
        let payload = stream[at..at + payload_len].to_vec();
        at += payload_len;
        replies.push((word(8), word(24) as i64, reply, payload));
    }
    replies
}

#[test]
fn unsealed_read_only_sub_ops_are_served_and_others_refused_without_closing() {
    let mut osd = osd();
    let list = Request {
        id: 1,
        body: RequestBody::SecList(SecList {
            list_pg: 1,
            pg_count: 4,
            pg_stripe_size: 131072,
            min_inode: 1 << 48,
            max_inode: (2 << 48) - 1,
            ..SecList::default()
        }),
    };
    let write = Request {
        id: 2,
        body: RequestBody::SecWriteStable(SecRw {
            len: 4096,
            ..SecRw::default()
        }),
    };
    let mut unknown = [0u8; PACKET_SIZE];
    unknown[..8].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
    unknown[8..16].copy_from_slice(&3u64.to_le_bytes());
    unknown[16..24].copy_from_slice(&0x77u64.to_le_bytes());
    let ping = Request {
        id: 4,
        body: RequestBody::Ping,
    };
    let mut bytes = unsealed(list).to_vec();
    bytes.extend_from_slice(&unsealed(write));
    bytes.extend_from_slice(&[0x5a; 4096]);
    bytes.extend_from_slice(&unknown);
    bytes.extend_from_slice(&unknown);
    bytes.extend_from_slice(&unsealed(ping));
    let replies = exchange(&mut osd, &bytes);
    let by_id = |id: u64| {
        replies
            .iter()
            .find(|reply| reply.0 == id)
            .unwrap_or_else(|| panic!("no reply to request {id}: {replies:?}"))
    };
    let listed = by_id(1).2.expect("a SEC_LIST reply");
    assert_eq!(listed.opcode, Opcode::SecList);
    assert_eq!(listed.retval, 0, "an empty store lists no objects");
    assert!(matches!(listed.body, ReplyBody::SecList { .. }));
    assert_eq!(by_id(2).1, -i64::from(errno::EPERM));
    assert_eq!(by_id(3).1, -i64::from(errno::EINVAL));
    assert_eq!(by_id(4).1, 0);
    assert_eq!(replies.len(), 5, "both unknown requests are answered");
}

#[test]
fn show_config_reply_is_json_and_one_nul() {
    let mut osd = osd();
    let hello = b"{\"osd_num\":0}";
    let request = Request {
        id: 9,
        body: RequestBody::ShowConfig {
            json_len: hello.len() as u64,
        },
    };
    let mut bytes = unsealed(request).to_vec();
    bytes.extend_from_slice(hello);
    let replies = exchange(&mut osd, &bytes);
    let (_, retval, _, payload) = &replies[0];
    assert_eq!(*retval as usize, payload.len());
    assert_eq!(
        payload.last(),
        Some(&0),
        "Vitastor's client reads a C string"
    );
    assert!(!payload[..payload.len() - 1].contains(&0));
    let config = ShowConfigReply::parse(payload).expect("valid JSON");
    assert_eq!(config.osd_num, 3);
    assert_eq!(config.protocol_version, 1);
    assert!(!config.readonly);
}

/// EC's second phase (issue 13): a primary's sealed SEC_STABILIZE / SEC_ROLLBACK over a
/// list of chunk versions makes unstable versions stable or drops them; a request of an
/// older epoch than the PG's fence is refused, a bad list gets -EINVAL, and the connection
/// stays open.
#[test]
fn stabilize_and_rollback_settle_unstable_versions() {
    use vitastor_proto::wire::encode_obj_versions;
    use vitastor_proto::{ObjectId, ObjectVersion};
    let mut osd = osd();
    let oid = |stripe| ObjectId {
        inode: 1 << 48 | 7,
        stripe,
    };
    let (a, b) = (oid(0x20001), oid(0x40002));
    let write = |id, oid, version| {
        let rw = SecRw {
            oid,
            version,
            len: 4096,
            pg: 1,
            epoch: 5,
            ..SecRw::default()
        };
        let mut bytes = Request {
            id,
            body: RequestBody::SecWrite(rw),
        }
        .encode()
        .to_vec();
        bytes.extend_from_slice(&[id as u8; 4096]);
        bytes
    };
    let mut bytes = write(1, a, 1);
    bytes.extend(write(2, a, 2));
    bytes.extend(write(3, b, 1));
    for (id, retval, _, _) in exchange(&mut osd, &bytes) {
        assert_eq!(retval, 4096, "write {id}");
    }
    let settle = |id, rollback: bool, epoch, items: &[(ObjectId, u64)]| {
        let list: Vec<ObjectVersion> = items
            .iter()
            .map(|&(oid, version)| ObjectVersion { oid, version })
            .collect();
        let payload = encode_obj_versions(&list);
        let len = payload.len() as u64;
        let body = if rollback {
            RequestBody::SecRollback { len, pg: 1, epoch }
        } else {
            RequestBody::SecStabilize { len, pg: 1, epoch }
        };
        let mut bytes = Request { id, body }.encode().to_vec();
        bytes.extend(payload);
        bytes
    };
    let replies = exchange(&mut osd, &settle(4, true, 5, &[(a, 1)]));
    assert_eq!(replies[0].1, 0, "rollback of a to 1");
    let replies = exchange(&mut osd, &settle(5, false, 5, &[(a, 1), (b, 1)]));
    assert_eq!(replies[0].1, 0, "stabilize");
    let listed: Vec<(ObjectId, u64, bool)> = osd
        .store()
        .list(0, 0, 0, 1 << 48, 2 << 48)
        .into_iter()
        .map(|v| (v.oid, v.version, v.stable))
        .collect();
    assert_eq!(listed, vec![(a, 1, true), (b, 1, true)]);
    let replies = exchange(&mut osd, &settle(6, false, 4, &[(a, 1)]));
    assert_eq!(
        replies[0].1,
        -i64::from(errno::EPIPE),
        "a deposed primary's epoch"
    );
    let replies = exchange(&mut osd, &settle(7, true, 5, &[]));
    assert_eq!(replies[0].1, -i64::from(errno::EINVAL), "an empty list");
}
