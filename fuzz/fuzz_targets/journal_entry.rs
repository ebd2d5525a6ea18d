//! On-disk records read at startup: journal entries, journal headers and metadata slots
//! decode to a record or to "invalid", never a panic, also with a valid checksum; and
//! replay of a small store whose records were patched (and sealed again, so they get past
//! the checksum check) opens or fails with a reason, never panics, and what it opened
//! works. The logic is `vitastor_osd::blockstore::fuzz_records`, which a unit test also
//! drives on stable.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vitastor_osd::blockstore::fuzz_records::journal_entry(data);
});
