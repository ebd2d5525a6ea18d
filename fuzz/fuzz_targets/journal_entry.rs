//! On-disk records read at startup: journal entries, journal headers and metadata slots
//! decode to a record or to "invalid", never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vitastor_osd::blockstore::journal_format::{EntryHeader, JournalHeader};
use vitastor_osd::blockstore::meta_format;

fuzz_target!(|data: &[u8]| {
    let mut sector = [0u8; 4096];
    let len = data.len().min(4096);
    sector[..len].copy_from_slice(&data[..len]);
    for format_id in [0, u64::from_le_bytes(sector[8..16].try_into().unwrap())] {
        let _ = EntryHeader::decode(&sector, format_id, 4);
        let _ = JournalHeader::decode(&sector, format_id);
        let _ = meta_format::decode(&sector, 0, 32, format_id);
    }
});
