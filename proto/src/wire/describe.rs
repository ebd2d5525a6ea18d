//! DESCRIBE (opcode 18): where a PG's objects are not as they should be, as Vitastor's
//! `vitastor-cli describe` asks each primary: one 32-byte item per object and OSD
//! (inode, stripe, part, what is wrong there as LOC_* bits, the OSD). The request picks
//! object states (OBJ_* bits; 0 = all), an inode/offset range, a pool and PG (0 = all)
//! and a limit; the reply's retval is the number of items.

/// What is wrong with one copy (`loc_bad`).
pub const LOC_OUTDATED: u32 = 1;
pub const LOC_CORRUPTED: u32 = 2;
pub const LOC_INCONSISTENT: u32 = 4;

/// Object states a request can select (`object_state`).
pub const OBJ_DEGRADED: u64 = 0x02;
pub const OBJ_INCOMPLETE: u64 = 0x04;
pub const OBJ_MISPLACED: u64 = 0x08;
pub const OBJ_CORRUPTED: u64 = 0x10;
pub const OBJ_INCONSISTENT: u64 = 0x20;

/// Bytes of one item on the wire.
pub const DESCRIBE_ITEM_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DescribeItem {
    pub inode: u64,
    pub stripe: u64,
    /// The part number: 0 for replicas.
    pub role: u32,
    pub loc_bad: u32,
    pub osd_num: u64,
}

pub fn encode_describe_items(items: &[DescribeItem]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() * DESCRIBE_ITEM_BYTES);
    for item in items {
        out.extend_from_slice(&item.inode.to_le_bytes());
        out.extend_from_slice(&item.stripe.to_le_bytes());
        out.extend_from_slice(&item.role.to_le_bytes());
        out.extend_from_slice(&item.loc_bad.to_le_bytes());
        out.extend_from_slice(&item.osd_num.to_le_bytes());
    }
    out
}

pub fn decode_describe_items(bytes: &[u8]) -> Result<Vec<DescribeItem>, String> {
    if !bytes.len().is_multiple_of(DESCRIBE_ITEM_BYTES) {
        return Err(format!(
            "a DESCRIBE reply of {} bytes is not a whole number of {DESCRIBE_ITEM_BYTES}-byte items",
            bytes.len()
        ));
    }
    let u64_at = |chunk: &[u8], at: usize| {
        u64::from_le_bytes(chunk[at..at + 8].try_into().expect("8 bytes"))
    };
    let u32_at = |chunk: &[u8], at: usize| {
        u32::from_le_bytes(chunk[at..at + 4].try_into().expect("4 bytes"))
    };
    Ok(bytes
        .chunks(DESCRIBE_ITEM_BYTES)
        .map(|chunk| DescribeItem {
            inode: u64_at(chunk, 0),
            stripe: u64_at(chunk, 8),
            role: u32_at(chunk, 16),
            loc_bad: u32_at(chunk, 20),
            osd_num: u64_at(chunk, 24),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_and_bad_lengths_are_refused() {
        let items = vec![
            DescribeItem {
                inode: 1 << 48 | 7,
                stripe: 0x20000,
                role: 0,
                loc_bad: LOC_INCONSISTENT,
                osd_num: 3,
            },
            DescribeItem {
                inode: 2 << 48 | 1,
                stripe: 0,
                role: 1,
                loc_bad: LOC_OUTDATED | LOC_CORRUPTED,
                osd_num: 12,
            },
        ];
        let bytes = encode_describe_items(&items);
        assert_eq!(bytes.len(), 64);
        assert_eq!(decode_describe_items(&bytes).unwrap(), items);
        assert!(decode_describe_items(&bytes[..40]).is_err());
    }
}
