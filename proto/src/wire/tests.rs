//! Round trips and hostile inputs for the wire codec.

use super::request::{Describe, Rw, SecList, SecLock, SecRw};
use super::*;
use crate::{ObjectId, ObjectVersion};
use proptest::prelude::*;

fn arb_sec_rw() -> impl Strategy<Value = SecRw> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        0u32..(32 << 20),
        0u32..4096,
        (any::<u32>(), any::<u64>()),
    )
        .prop_map(
            |(inode, stripe, version, offset, len, attr_len, (pg, epoch))| SecRw {
                oid: ObjectId { inode, stripe },
                version,
                offset,
                len,
                attr_len,
                pg,
                epoch,
            },
        )
}

fn arb_rw(max_len: u32) -> impl Strategy<Value = Rw> {
    (
        any::<u64>(),
        any::<u64>(),
        0..=max_len,
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(inode, offset, len, flags, meta_revision, version)| Rw {
            inode,
            offset,
            len,
            flags,
            meta_revision,
            version,
        })
}

fn arb_body() -> impl Strategy<Value = RequestBody> {
    let obj_len = (0u64..1000).prop_map(|n| n * OBJ_VER_SIZE);
    prop_oneof![
        arb_sec_rw().prop_map(RequestBody::SecRead),
        arb_sec_rw().prop_map(RequestBody::SecWrite),
        arb_sec_rw().prop_map(RequestBody::SecWriteStable),
        Just(RequestBody::SecSync),
        (obj_len.clone(), any::<u32>(), any::<u64>())
            .prop_map(|(len, pg, epoch)| RequestBody::SecStabilize { len, pg, epoch }),
        (obj_len.clone(), any::<u32>(), any::<u64>())
            .prop_map(|(len, pg, epoch)| RequestBody::SecRollback { len, pg, epoch }),
        obj_len.prop_map(|len| RequestBody::SecReadBmp { len }),
        (any::<[u64; 4]>(), any::<u32>(), any::<bool>()).prop_map(|(n, pg, purge)| {
            RequestBody::SecDelete(request::SecDelete {
                oid: ObjectId {
                    inode: n[0],
                    stripe: n[1],
                },
                version: n[2],
                epoch: n[3],
                pg,
                purge,
            })
        }),
        any::<[u64; 2]>().prop_map(|n| RequestBody::CondemnCopy(ObjectId {
            inode: n[0],
            stripe: n[1],
        })),
        Just(RequestBody::TestSyncStabAll),
        (any::<[u32; 4]>(), any::<[u64; 6]>()).prop_map(|(a, b)| RequestBody::SecList(SecList {
            list_pg: a[0],
            pg_count: a[1],
            stable_limit: a[2],
            flags: a[3],
            epoch: b[5],
            pg_stripe_size: b[0],
            min_inode: b[1],
            max_inode: b[2],
            min_stripe: b[3],
            max_stripe: b[4],
        })),
        (0..=MAX_PAYLOAD_BYTES).prop_map(|json_len| RequestBody::ShowConfig { json_len }),
        arb_rw(u32::MAX).prop_map(RequestBody::Read),
        arb_rw(MAX_PAYLOAD_BYTES as u32).prop_map(RequestBody::Write),
        Just(RequestBody::Sync),
        arb_rw(u32::MAX).prop_map(RequestBody::Delete),
        Just(RequestBody::Ping),
        arb_rw(u32::MAX).prop_map(RequestBody::Scrub),
        (any::<[u64; 6]>(), any::<[u32; 2]>()).prop_map(|(d, pg)| {
            RequestBody::Describe(Describe {
                object_state: d[0],
                min_inode: d[1],
                min_offset: d[2],
                max_inode: d[3],
                max_offset: d[4],
                limit: d[5],
                pool_id: pg[0],
                pg_num: pg[1],
            })
        }),
        any::<[u64; 4]>().prop_map(|l| RequestBody::SecLock(SecLock {
            flags: l[0],
            pool_id: l[1],
            pg_num: l[2],
            pg_state: l[3],
        })),
    ]
}

proptest! {
    #[test]
    fn requests_round_trip(id: u64, body in arb_body()) {
        let request = Request { id, body };
        let bytes = request.encode();
        prop_assert_eq!(Request::decode(&bytes), Ok(request));
    }

    #[test]
    fn replies_round_trip(id: u64, op_index in 0usize..Opcode::ALL.len(), retval in -200i64..(1 << 20), version: u64, len in 0u32..4096) {
        let opcode = Opcode::ALL[op_index];
        let body = match Reply::empty_body(opcode) {
            ReplyBody::Rw { .. } => ReplyBody::Rw { bitmap_len: len, version },
            ReplyBody::SecRw { .. } => ReplyBody::SecRw { version, attr_len: len },
            ReplyBody::SecDelete { .. } => ReplyBody::SecDelete { version },
            ReplyBody::SecList { .. } => ReplyBody::SecList { stable_count: version, deleted_count: u64::from(len) },
            ReplyBody::Describe { .. } => ReplyBody::Describe { result_bytes: u64::from(len) },
            ReplyBody::Empty => ReplyBody::Empty,
        };
        let reply = Reply { id, opcode, retval, body };
        prop_assert_eq!(Reply::decode(&reply.encode()), Ok(reply));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Request::decode(&bytes);
        let _ = Reply::decode(&bytes);
    }

    #[test]
    fn arbitrary_headers_with_valid_magic_never_panic(mut bytes in proptest::array::uniform32(any::<u8>()), tail in proptest::collection::vec(any::<u8>(), 96), opcode in 0u64..25) {
        let mut header = [0u8; PACKET_SIZE];
        bytes[..8].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
        bytes[16..24].copy_from_slice(&opcode.to_le_bytes());
        header[..32].copy_from_slice(&bytes);
        header[32..].copy_from_slice(&tail);
        header[124..].copy_from_slice(&[0; 4]);
        if let Ok(request) = Request::decode(&header) {
            prop_assert!(request.payload_len() <= MAX_PAYLOAD_BYTES);
            prop_assert!(!request.body.requires_seal());
            prop_assert_eq!(request.body, request.body.without_fencing());
        }
        super::seal(&mut header);
        if let Ok(request) = Request::decode(&header) {
            prop_assert!(request.payload_len() <= MAX_PAYLOAD_BYTES);
        }
    }

    #[test]
    fn truncated_headers_are_errors(id: u64, body in arb_body(), cut in 0usize..PACKET_SIZE) {
        let bytes = Request { id, body }.encode();
        prop_assert_eq!(Request::decode(&bytes[..cut]), Err(WireError::Truncated(cut)));
    }

    #[test]
    fn flipped_bits_are_detected(id: u64, body in arb_body(), bit in 0usize..(PACKET_SIZE * 8)) {
        let mut bytes = Request { id, body }.encode();
        let original = Request::decode(&bytes);
        bytes[bit / 8] ^= 1 << (bit % 8);
        // Any single-bit change is either rejected or (only when it zeroes the crc field of a
        // client op) decodes to exactly the original request.
        match Request::decode(&bytes) {
            Err(_) => {}
            Ok(decoded) => {
                prop_assert!(bit >= 124 * 8);
                let unfenced = original.map(|r| Request { id: r.id, body: r.body.without_fencing() });
                prop_assert_eq!(Ok(decoded), unfenced);
            }
        }
    }

    #[test]
    fn obj_versions_round_trip(items in proptest::collection::vec(any::<(u64, u64, u64)>(), 0..50)) {
        let items: Vec<ObjectVersion> = items
            .into_iter()
            .map(|(inode, stripe, version)| ObjectVersion { oid: ObjectId { inode, stripe }, version })
            .collect();
        prop_assert_eq!(decode_obj_versions(&encode_obj_versions(&items)), Ok(items));
    }
}

#[test]
fn hostile_headers_get_specific_errors() {
    let mut header = Request {
        id: 7,
        body: RequestBody::Ping,
    }
    .encode();
    header[0] ^= 0xff;
    assert!(matches!(
        Request::decode(&header),
        Err(WireError::BadMagic(_))
    ));

    let mut unknown = [0u8; PACKET_SIZE];
    unknown[..8].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
    unknown[8..16].copy_from_slice(&99u64.to_le_bytes());
    unknown[16..24].copy_from_slice(&77u64.to_le_bytes());
    assert_eq!(
        Request::decode(&unknown),
        Err(WireError::UnknownOpcode { id: 99, opcode: 77 })
    );

    let huge = Request {
        id: 1,
        body: RequestBody::ShowConfig {
            json_len: MAX_PAYLOAD_BYTES + 1,
        },
    }
    .encode();
    assert!(matches!(
        Request::decode(&huge),
        Err(WireError::PayloadTooLarge { .. })
    ));

    let sec_write = SecRw {
        len: u32::MAX,
        attr_len: u32::MAX,
        ..SecRw::default()
    };
    let too_big = Request {
        id: 1,
        body: RequestBody::SecWrite(sec_write),
    }
    .encode();
    assert!(matches!(
        Request::decode(&too_big),
        Err(WireError::PayloadTooLarge { .. })
    ));

    // Mutating secondary ops must carry the header crc; client ops may omit it (Vitastor
    // clients do), and so may read-only sub-ops (Vitastor's tools send SEC_LIST).
    let mut unsealed = Request {
        id: 1,
        body: RequestBody::SecStabilize {
            len: 24,
            pg: 1,
            epoch: 2,
        },
    }
    .encode();
    unsealed[124..].copy_from_slice(&[0; 4]);
    assert!(matches!(
        Request::decode(&unsealed),
        Err(WireError::MissingChecksum { .. })
    ));
    let mut client = Request {
        id: 1,
        body: RequestBody::Sync,
    }
    .encode();
    client[124..].copy_from_slice(&[0; 4]);
    assert!(Request::decode(&client).is_ok());

    assert!(decode_obj_versions(&[0u8; 25]).is_err());
}

#[test]
fn read_reply_payload_is_bitmap_plus_data() {
    let reply = Reply {
        id: 1,
        opcode: Opcode::Read,
        retval: 4096,
        body: ReplyBody::Rw {
            bitmap_len: 4,
            version: 9,
        },
    };
    assert_eq!(reply.payload_len(), 4100);
    let failed = Reply::error(1, Opcode::Read, crate::errno::EPIPE);
    assert_eq!(failed.retval, -32);
    assert_eq!(failed.payload_len(), 0);
}
